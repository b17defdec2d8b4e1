//! The Secret watches behind the index: list then watch (never a streaming list, which
//! some API servers refuse), restarted with backoff on any error, and listed again after a
//! 410. One managed and one metadata-only stream per namespace in scope, or one each for the
//! whole cluster.

use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, InitialListStrategy};
use serde::de::DeserializeOwned;

use crate::kube_api::{self, causes};
use crate::refresher::index::{Change, Source, StreamId};
use crate::refresher::listing::{managed_selector, unmanaged_selector};
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
fn report<T>(stream: &StreamId, metrics: &Metrics, item: Result<T, watcher::Error>) -> Option<T> {
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
            tracing::warn!(watch = stream.source.label(), %scope, "watching Secrets failed; retrying with backoff: {}", causes(&e));
            None
        }
    }
}

/// Full Secrets per list page of the managed watch: a page is held in memory whole, and a
/// Secret may hold up to 1 MiB.
const MANAGED_PAGE: u32 = 100;

/// All watch streams, merged into one stream of changes.
pub fn changes(
    client: &kube::Client,
    streams: &[StreamId],
    exclude: &[String],
    page_size: u32,
    metrics: &Arc<Metrics>,
) -> impl Stream<Item = Change> + Send + 'static {
    let config = |selector: String, ns: Option<&str>, page_size: u32| {
        let mut config = watcher::Config::default()
            .labels(&selector)
            .page_size(page_size);
        if let Some(fields) = kube_api::field_selector(ns, exclude) {
            config = config.fields(&fields);
        }
        config.initial_list_strategy = InitialListStrategy::ListWatch;
        config
    };
    let all = streams.iter().map(|id| {
        let ns = id.namespace.as_deref();
        match id.source {
            Source::Managed => follow(
                kube_api::scoped::<Secret>(client, ns),
                config(managed_selector(), ns, page_size.min(MANAGED_PAGE)),
                id,
                metrics,
                Change::Managed,
            ),
            Source::Unmanaged => follow(
                kube_api::scoped::<PartialObjectMeta<Secret>>(client, ns),
                config(unmanaged_selector(), ns, page_size),
                id,
                metrics,
                Change::Unmanaged,
            ),
        }
    });
    futures::stream::select_all(all)
}

/// One watch stream, retried with backoff, its errors reported, its events made changes.
fn follow<K>(
    api: Api<K>,
    config: watcher::Config,
    id: &StreamId,
    metrics: &Arc<Metrics>,
    change: fn(StreamId, watcher::Event<K>) -> Change,
) -> BoxStream<'static, Change>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let metrics = Arc::clone(metrics);
    let id = id.clone();
    watcher::watcher(api, config)
        .default_backoff()
        .filter_map(move |item| {
            let event = report(&id, &metrics, item).map(|event| change(id.clone(), event));
            futures::future::ready(event)
        })
        .boxed()
}
