//! List, then watch, one kind of object in one scope, each object kept as the caller says as
//! soon as it has arrived: lists page by page and item by item (`list`), watch events one at a
//! time. Never a streaming list, which some API servers refuse.
//!
//! Written here rather than with kube-runtime's watcher, which reads each list page whole
//! into memory: a page of Secrets that tenants filled with a megabyte each would be hundreds
//! of megabytes, and kubeecr's memory must not depend on what other Secrets hold. It keeps
//! that watcher's behaviour where it matters:
//! - after a 410 (a continue token or the watch's version compacted away) it lists again,
//!   reporting the 410 as an error, as kube-runtime does;
//! - after any other error it backs off (800 ms doubling to 30 s, with jitter) and goes on
//!   from where it was (the same list page, or the watch's version); the backoff starts over
//!   only once the stream has gone `HEALTHY` long without an error, so a page that fails
//!   every time cannot make it list in a loop;
//! - a watch that sends nothing, not even a bookmark, for longer than it was asked to stay
//!   open is taken as dead and opened again, and so is one whose answer does not start within
//!   `list::SILENCE`: a half-open connection would otherwise stall it for good, and kube's
//!   client has no read timeout;
//! - an event that does not decode is reported and skipped; the stream goes on.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kube::api::WatchParams;
use kube::core::WatchEvent;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::k8s::list::{self, ListSpec, SILENCE, silent};
use crate::k8s::status_code;

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

/// How each decoded object becomes what the caller keeps.
pub type Keep<T, U> = Arc<dyn Fn(T) -> U + Send + Sync>;

/// A watch is asked to stay open this long (the API server's limit is about 30 minutes);
/// then it is opened again from where it was.
const WATCH_SECONDS: u32 = 290;

/// Silence past the watch's own timeout after which it is taken as dead.
const WATCH_GRACE: Duration = Duration::from_secs(10);

/// A watch that ends sooner than this is reported, and paused before it is opened again:
/// something between kubeecr and the API server cuts it.
const SHORT_WATCH: Duration = Duration::from_secs(5);

/// A stream this long without an error starts its backoff over.
const HEALTHY: Duration = Duration::from_secs(60);

/// Retries start at this wait and double up to `MAX_BACKOFF`, as kube-runtime's do.
const MIN_BACKOFF: Duration = Duration::from_millis(800);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

type Events<T> = BoxStream<'static, Result<WatchEvent<T>, kube::Error>>;

enum Phase<T> {
    /// Listing, at `continue_token` (`None`: the first page, after an `Init`).
    Listing { continue_token: Option<String> },
    /// Watching from `version`, with the open watch (and when it opened) if there is one.
    Watching {
        version: String,
        open: Option<(Events<T>, Instant)>,
    },
}

struct State<T, U> {
    client: kube::Client,
    spec: WatchSpec,
    keep: Keep<T, U>,
    phase: Phase<T>,
    backoff: Duration,
    /// When the last error was.
    failed_at: Option<Instant>,
    /// Set after an error: how long to wait before the next step.
    pause: Option<Duration>,
    /// Nothing has come since the last list started: a relist now comes too soon.
    quiet_since_list: bool,
    /// Events ready to hand out.
    ready: VecDeque<Result<Event<U>, kube::Error>>,
}

impl<T, U> State<T, U>
where
    T: DeserializeOwned + Clone + Versioned + Send + 'static,
{
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
        self.back_off();
    }

    fn back_off(&mut self) {
        self.failed_at = Some(Instant::now());
        self.pause = Some(self.backoff.mul_f64(0.5 + fastrand::f64() / 2.0));
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Something arrived: the backoff starts over if the last error is long enough ago.
    fn healthy(&mut self) {
        if self.failed_at.is_none_or(|at| at.elapsed() >= HEALTHY) {
            self.backoff = MIN_BACKOFF;
        }
    }

    /// An object arrived by the watch: a relist now would not come too soon.
    fn heard(&mut self) {
        self.healthy();
        self.quiet_since_list = false;
    }

    /// Lists again from the start; paced when nothing came since the last list, so that a
    /// server answering 410 at once cannot make it list in a loop.
    fn relist(&mut self) -> Phase<T> {
        if self.quiet_since_list {
            self.back_off();
        }
        self.quiet_since_list = true;
        Phase::Listing {
            continue_token: None,
        }
    }

    /// Takes one step; events it gives are queued in `ready`.
    async fn step(&mut self) {
        let placeholder = Phase::Listing {
            continue_token: None,
        };
        let phase = std::mem::replace(&mut self.phase, placeholder);
        self.phase = match phase {
            Phase::Listing { continue_token } => self.list(continue_token).await,
            Phase::Watching {
                version,
                open: None,
            } => self.open(version).await,
            Phase::Watching {
                version,
                open: Some((events, since)),
            } => self.watch(version, events, since).await,
        };
    }

    /// Reads one page of the list.
    async fn list(&mut self, continue_token: Option<String>) -> Phase<T> {
        if continue_token.is_none() {
            self.ready.push_back(Ok(Event::Init));
        }
        let request = self.spec.request(continue_token.as_deref());
        let keep = Arc::clone(&self.keep);
        match list::page(&self.client, request, move |o: T| keep(o)).await {
            Ok(page) => {
                self.healthy();
                self.ready
                    .extend(page.items.into_iter().map(|o| Ok(Event::InitApply(o))));
                match (page.continue_token, page.resource_version) {
                    (Some(token), _) => Phase::Listing {
                        continue_token: Some(token),
                    },
                    (None, Some(version)) if !version.is_empty() => {
                        self.ready.push_back(Ok(Event::InitDone));
                        Phase::Watching {
                            version,
                            open: None,
                        }
                    }
                    // Nowhere to watch from: list again, after a pause.
                    (None, _) => {
                        let status = kube::core::Status::failure(
                            "the list answer has no resourceVersion to watch from",
                            "NoResourceVersion",
                        );
                        self.failed(kube::Error::Api(Box::new(status)));
                        Phase::Listing {
                            continue_token: None,
                        }
                    }
                }
            }
            // The continue token expired: list again from the start.
            Err(e) if status_code(&e) == Some(410) => {
                self.ready.push_back(Err(e));
                self.relist()
            }
            // Anything else: that page again, after a pause (its `Init` is already out).
            Err(e) => {
                self.failed(e);
                Phase::Listing { continue_token }
            }
        }
    }

    /// Opens the watch from `version`.
    async fn open(&mut self, version: String) -> Phase<T> {
        let request = self.watch_request(&version);
        let opened = tokio::time::timeout(SILENCE, self.client.request_events::<T>(request))
            .await
            .unwrap_or_else(|_| Err(silent()));
        match opened {
            Ok(stream) => Phase::Watching {
                version,
                open: Some((stream.boxed(), Instant::now())),
            },
            Err(e) if status_code(&e) == Some(410) => {
                self.ready.push_back(Err(e));
                self.relist()
            }
            Err(e) => {
                self.failed(e);
                Phase::Watching {
                    version,
                    open: None,
                }
            }
        }
    }

    /// Reads one event of the open watch.
    async fn watch(
        &mut self,
        mut version: String,
        mut events: Events<T>,
        since: Instant,
    ) -> Phase<T> {
        let silence = Duration::from_secs(u64::from(WATCH_SECONDS)) + WATCH_GRACE;
        let next = tokio::time::timeout(silence, events.next()).await;
        let reopen = |version| Phase::Watching {
            version,
            open: None,
        };
        let at = |o: &T, version: &mut String| {
            if let Some(v) = o.resource_version() {
                *version = v.to_string();
            }
        };
        match next {
            Ok(Some(Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)))) => {
                self.heard();
                at(&o, &mut version);
                self.ready.push_back(Ok(Event::Apply((self.keep)(o))));
            }
            Ok(Some(Ok(WatchEvent::Deleted(o)))) => {
                self.heard();
                at(&o, &mut version);
                self.ready.push_back(Ok(Event::Delete((self.keep)(o))));
            }
            Ok(Some(Ok(WatchEvent::Bookmark(b)))) => {
                self.healthy();
                version = b.metadata.resource_version;
            }
            // Compacted away: list again.
            Ok(Some(Ok(WatchEvent::Error(status)))) if status.code == 410 => {
                self.ready.push_back(Err(kube::Error::Api(status)));
                return self.relist();
            }
            Ok(Some(Ok(WatchEvent::Error(status)))) => {
                self.failed(kube::Error::Api(status));
                return reopen(version);
            }
            // One event that does not decode: said, and skipped; the stream goes on. kube's
            // client gives such a line as a `Status` of code 0 when it decodes as one (every
            // field of a `Status` has a default), else as a `SerdeError`.
            Ok(Some(Err(kube::Error::Api(status)))) if status.code == 0 => {
                let error = std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "a watch event did not decode; it is skipped",
                );
                self.ready.push_back(Err(kube::Error::ReadEvents(error)));
            }
            Ok(Some(Err(e @ kube::Error::SerdeError(_)))) => self.ready.push_back(Err(e)),
            Ok(Some(Err(e))) => {
                self.failed(e);
                return reopen(version);
            }
            // The server closed it (its timeout): open it again from here; at once, unless it
            // was cut right after it opened, which is reported.
            Ok(None) => {
                let lasted = since.elapsed();
                if lasted < SHORT_WATCH {
                    let error = std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        format!(
                            "the watch was closed {} ms after it opened (a proxy or load balancer cutting it?); opening it again",
                            lasted.as_millis()
                        ),
                    );
                    self.failed(kube::Error::ReadEvents(error));
                }
                return reopen(version);
            }
            // Silent past its own timeout: a dead connection.
            Err(_) => {
                let error = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the watch sent nothing for {}; opening it again",
                        humantime::format_duration(silence)
                    ),
                );
                self.failed(kube::Error::ReadEvents(error));
                return reopen(version);
            }
        }
        Phase::Watching {
            version,
            open: Some((events, since)),
        }
    }
}

/// Lists, then watches, for ever, each object kept as `keep` says: every event, and every
/// error (after which it backs off).
pub fn list_watch<T, U>(
    client: kube::Client,
    spec: WatchSpec,
    keep: Keep<T, U>,
) -> impl Stream<Item = Result<Event<U>, kube::Error>> + Send + 'static
where
    T: DeserializeOwned + Clone + Versioned + Send + 'static,
    U: Send + 'static,
{
    let state = State {
        client,
        spec,
        keep,
        phase: Phase::Listing {
            continue_token: None,
        },
        backoff: MIN_BACKOFF,
        failed_at: None,
        pause: None,
        quiet_since_list: false,
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
