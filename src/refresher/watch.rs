//! The Secret watches behind the index: one managed and one metadata-only stream per
//! namespace in scope, or one each for the whole cluster, each a list then watch
//! (`k8s::watch`) that decodes nothing of a Secret but what kubeecr keeps.

use std::sync::Arc;

use futures::{Stream, StreamExt};

use crate::contract::partition::Regions;
use crate::k8s::watch::{Event, WatchSpec, list_watch};
use crate::k8s::{self, Scope};
use crate::refresher::index::{Change, Seen, Source, StreamId};
use crate::refresher::listing::{managed_selector, unmanaged_selector};
use crate::refresher::wire::WireSecret;
use crate::telemetry::metrics::{Metrics, WatchLabels};

/// Every stream to watch: managed and unmanaged, per namespace or for all.
pub fn stream_ids(namespaces: &[String], exclude: &[String]) -> Vec<StreamId> {
    let scopes = Scope::all(namespaces, exclude);
    [Source::Managed, Source::Unmanaged]
        .into_iter()
        .flat_map(|source| {
            scopes.iter().map(move |scope| StreamId {
                source,
                scope: scope.clone(),
            })
        })
        .collect()
}

/// Logs and counts a watch error; the stream retries on its own, with backoff.
fn report<T>(
    stream: &StreamId,
    metrics: &Metrics,
    item: Result<Event<T>, kube::Error>,
) -> Option<Event<T>> {
    match item {
        Ok(item) => Some(item),
        Err(e) => {
            metrics
                .watch_errors
                .get_or_create(&WatchLabels {
                    watch: stream.source.watch(),
                })
                .inc();
            let scope = &stream.scope;
            tracing::warn!(watch = stream.source.watch().as_str(), %scope, "watching Secrets failed; retrying with backoff: {}", k8s::describe(&e));
            None
        }
    }
}

/// All watch streams, merged into one stream of changes. Each Secret is kept (`regions`
/// tell which hosts its annotation names) as soon as it arrives.
pub fn changes(
    client: &kube::Client,
    streams: &[StreamId],
    exclude: &[String],
    page_size: u32,
    regions: &Regions,
    metrics: &Arc<Metrics>,
) -> impl Stream<Item = Change> + Send + 'static {
    let all = streams.iter().map(|id| {
        let managed = id.source == Source::Managed;
        let spec = WatchSpec {
            path: id.scope.secrets_path(),
            labels: if managed {
                managed_selector()
            } else {
                unmanaged_selector()
            },
            fields: id.scope.field_selector(exclude),
            page_size,
            metadata_only: !managed,
        };
        let (id, metrics) = (id.clone(), Arc::clone(metrics));
        let client = client.clone();
        match id.source {
            Source::Managed => {
                let regions = regions.clone();
                list_watch::<WireSecret, _>(
                    client,
                    spec,
                    Arc::new(move |s| Seen::managed(s, &regions)),
                )
                .filter_map(move |item| {
                    let change =
                        report(&id, &metrics, item).map(|e| Change::Managed(id.clone(), e));
                    futures::future::ready(change)
                })
                .boxed()
            }
            Source::Unmanaged => {
                list_watch::<WireSecret, _>(client, spec, Arc::new(Seen::unmanaged))
                    .filter_map(move |item| {
                        let change =
                            report(&id, &metrics, item).map(|e| Change::Unmanaged(id.clone(), e));
                        futures::future::ready(change)
                    })
                    .boxed()
            }
        }
    });
    futures::stream::select_all(all)
}
