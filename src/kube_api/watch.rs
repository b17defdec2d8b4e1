//! List, then watch, one kind of object in one scope, decoded into the caller's small type:
//! lists page by page and item by item as they arrive (`list`), watch events one at a time.
//! Never a streaming list, which some API servers refuse. After a 410 (the list's continue
//! token or the watch's version compacted away) it lists again; after any other error it
//! backs off and goes on from where it was.
//!
//! Written here rather than with kube-runtime's watcher, which reads each list page whole
//! into memory: a page of Secrets that tenants filled with a megabyte each would be hundreds
//! of megabytes, and kubeecr's memory must not depend on what other Secrets hold.

use std::collections::VecDeque;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kube::api::WatchParams;
use kube::core::WatchEvent;
use serde::de::DeserializeOwned;

use crate::kube_api::list::{self, ListSpec};
use crate::kube_api::status_code;

/// What a list-then-watch tells: as kube-runtime's watcher does. A list starts with `Init`,
/// gives every object as `InitApply` and ends with `InitDone`; objects the new list did not
/// give are gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<T> {
    Init,
    InitApply(T),
    InitDone,
    Apply(T),
    Delete(T),
}

/// An object whose place in the watch is its resourceVersion.
pub trait Versioned {
    fn resource_version(&self) -> Option<&str>;
}

/// What to list and watch.
pub type WatchSpec = ListSpec;

/// A watch stays open this long at most (the API server's limit is about 30 minutes); then
/// it is opened again from where it was.
const WATCH_SECONDS: u32 = 290;

/// Retries start at this wait and double up to `MAX_BACKOFF`, as kube-runtime's do.
const MIN_BACKOFF: Duration = Duration::from_millis(800);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

enum Phase<T> {
    /// Listing, at `continue_token` (`None`: the first page, after an `Init`).
    Listing { continue_token: Option<String> },
    /// Watching from `version`, with the open watch if there is one.
    Watching {
        version: String,
        events: Option<BoxStream<'static, Result<WatchEvent<T>, kube::Error>>>,
    },
}

struct State<T> {
    client: kube::Client,
    spec: WatchSpec,
    phase: Phase<T>,
    backoff: Duration,
    /// Set after an error: how long to wait before the next step.
    pause: Option<Duration>,
    /// Events ready to hand out.
    ready: VecDeque<Result<Event<T>, kube::Error>>,
}

impl<T: DeserializeOwned + Clone + Versioned + Send + 'static> State<T> {
    fn watch_request(&self, version: &str) -> http::Request<Vec<u8>> {
        let mut params = WatchParams::default()
            .labels(&self.spec.labels)
            .timeout(WATCH_SECONDS);
        if let Some(fields) = &self.spec.fields {
            params = params.fields(fields);
        }
        let request = kube::core::Request::new(&self.spec.path);
        let built = if self.spec.metadata_only {
            request.watch_metadata(&params, version)
        } else {
            request.watch(&params, version)
        };
        built.expect("a watch request from valid parameters")
    }

    /// Reports `error` at once, and waits before the next attempt.
    fn failed(&mut self, error: kube::Error) {
        self.ready.push_back(Err(error));
        self.pause = Some(self.backoff.mul_f64(0.5 + fastrand::f64() / 2.0));
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Takes one step; events it gives are queued in `ready`.
    async fn step(&mut self) {
        let relist = Phase::Listing {
            continue_token: None,
        };
        let phase = std::mem::replace(&mut self.phase, relist);
        self.phase = match phase {
            Phase::Listing { continue_token } => self.list(continue_token).await,
            Phase::Watching {
                version,
                events: None,
            } => self.open(version).await,
            Phase::Watching {
                version,
                events: Some(events),
            } => self.watch(version, events).await,
        };
    }

    /// Reads one page of the list.
    async fn list(&mut self, continue_token: Option<String>) -> Phase<T> {
        let relist = || Phase::Listing {
            continue_token: None,
        };
        if continue_token.is_none() {
            self.ready.push_back(Ok(Event::Init));
        }
        let request = self.spec.request(continue_token.as_deref());
        match list::page::<T>(&self.client, request).await {
            Ok(page) => {
                self.backoff = MIN_BACKOFF;
                self.ready
                    .extend(page.items.into_iter().map(|o| Ok(Event::InitApply(o))));
                match page.continue_token {
                    Some(token) => Phase::Listing {
                        continue_token: Some(token),
                    },
                    None => {
                        self.ready.push_back(Ok(Event::InitDone));
                        Phase::Watching {
                            version: page.resource_version.unwrap_or_default(),
                            events: None,
                        }
                    }
                }
            }
            // The continue token expired: list again from the start.
            Err(e) if status_code(&e) == Some(410) && continue_token.is_some() => relist(),
            Err(e) => {
                self.failed(e);
                relist()
            }
        }
    }

    /// Opens the watch from `version`.
    async fn open(&mut self, version: String) -> Phase<T> {
        let request = self.watch_request(&version);
        match self.client.request_events::<T>(request).await {
            Ok(stream) => Phase::Watching {
                version,
                events: Some(stream.boxed()),
            },
            Err(e) if status_code(&e) == Some(410) => Phase::Listing {
                continue_token: None,
            },
            Err(e) => {
                self.failed(e);
                Phase::Watching {
                    version,
                    events: None,
                }
            }
        }
    }

    /// Reads one event of the open watch.
    async fn watch(
        &mut self,
        mut version: String,
        mut events: BoxStream<'static, Result<WatchEvent<T>, kube::Error>>,
    ) -> Phase<T> {
        let at = |o: &T, version: &mut String| {
            if let Some(v) = o.resource_version() {
                *version = v.to_string();
            }
        };
        match events.next().await {
            Some(Ok(WatchEvent::Added(o) | WatchEvent::Modified(o))) => {
                self.backoff = MIN_BACKOFF;
                at(&o, &mut version);
                self.ready.push_back(Ok(Event::Apply(o)));
            }
            Some(Ok(WatchEvent::Deleted(o))) => {
                at(&o, &mut version);
                self.ready.push_back(Ok(Event::Delete(o)));
            }
            Some(Ok(WatchEvent::Bookmark(b))) => version = b.metadata.resource_version,
            // Compacted away: list again.
            Some(Ok(WatchEvent::Error(status))) if status.code == 410 => {
                return Phase::Listing {
                    continue_token: None,
                };
            }
            Some(Ok(WatchEvent::Error(status))) => {
                self.failed(kube::Error::Api(status));
                return Phase::Watching {
                    version,
                    events: None,
                };
            }
            Some(Err(e)) => {
                self.failed(e);
                return Phase::Watching {
                    version,
                    events: None,
                };
            }
            // The server closed it (its timeout): open it again from here.
            None => {
                return Phase::Watching {
                    version,
                    events: None,
                };
            }
        }
        Phase::Watching {
            version,
            events: Some(events),
        }
    }
}

/// Lists, then watches, for ever: every event, and every error (after which it backs off).
pub fn list_watch<T>(
    client: kube::Client,
    spec: WatchSpec,
) -> impl Stream<Item = Result<Event<T>, kube::Error>> + Send + 'static
where
    T: DeserializeOwned + Clone + Versioned + Send + 'static,
{
    let state = State {
        client,
        spec,
        phase: Phase::Listing {
            continue_token: None,
        },
        backoff: MIN_BACKOFF,
        pause: None,
        ready: VecDeque::new(),
    };
    futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(next) = state.ready.pop_front() {
                return Some((next, state));
            }
            if let Some(pause) = state.pause.take() {
                tokio::time::sleep(pause).await;
            }
            state.step().await;
        }
    })
}
