//! A list request answered page by page, each page decoded item by item as its bytes arrive
//! (`items`), into whatever small type the caller keeps of an object. Memory then depends on
//! the largest object and on what is kept, never on what the objects of a page hold together.

use std::time::Duration;

use http_body_util::BodyExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use kube::api::ListParams;
use kube::client::Body;
use serde::de::DeserializeOwned;

use crate::k8s::items::{FeedError, ListSplitter, Piece};
use crate::k8s::status_code;

/// The largest object read, as JSON. etcd keeps objects under 1.5 MiB by default; this leaves
/// room for clusters that raised it.
pub const MAX_OBJECT_BYTES: usize = 16 << 20;

/// The largest error answer read.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// How long a list answer may send nothing, before its headers or between two of its
/// chunks. Not a bound on the whole page: a page of large Secrets from a busy API server may
/// take long, but one that stops sending would otherwise hang for good (kube's client has no
/// read timeout of its own).
pub const SILENCE: Duration = Duration::from_secs(60);

/// The error of an answer that sent nothing for `SILENCE`.
pub fn silent() -> kube::Error {
    kube::Error::ReadEvents(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "the API server sent nothing for {}",
            humantime::format_duration(SILENCE)
        ),
    ))
}

/// One page of a list.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Where the next page starts; `None` after the last.
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
}

/// Sends `request` (a list, from `kube::core::Request`) and decodes its answer into a page,
/// each item decoded as `T` and turned into what the caller keeps (`keep`) as soon as it has
/// arrived, so that a page never holds more than one item whole. Errors are kube's: the API
/// server's `Status`, or transport; an answer that does not decode is a `SerdeError` (which
/// says where, and `describe` never quotes it).
pub async fn page<T: DeserializeOwned, U>(
    client: &kube::Client,
    request: http::Request<Vec<u8>>,
    mut keep: impl FnMut(T) -> U,
) -> Result<Page<U>, kube::Error> {
    let response = tokio::time::timeout(SILENCE, client.send(request.map(Body::from)))
        .await
        .map_err(|_| silent())??;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        return Err(api_error(status, body).await);
    }
    let mut splitter = ListSplitter::new(MAX_OBJECT_BYTES);
    let mut items = Vec::new();
    let mut meta: Option<ListMeta> = None;
    while let Some(frame) = tokio::time::timeout(SILENCE, body.frame())
        .await
        .map_err(|_| silent())?
    {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        splitter
            .feed(&data, &mut |piece| {
                match piece {
                    Piece::Item(bytes) => items.push(keep(serde_json::from_slice(bytes)?)),
                    Piece::Metadata(bytes) => meta = Some(serde_json::from_slice(bytes)?),
                }
                Ok::<_, serde_json::Error>(())
            })
            .map_err(|e| match e {
                FeedError::Split(e) => kube::Error::Service(Box::new(e)),
                FeedError::Piece(e) => kube::Error::SerdeError(e),
            })?;
    }
    splitter
        .finish()
        .map_err(|e| kube::Error::Service(Box::new(e)))?;
    let meta = meta.unwrap_or_default();
    Ok(Page {
        items,
        continue_token: meta.continue_.filter(|t| !t.is_empty()),
        resource_version: meta.resource_version,
    })
}

/// The API server's `Status` for a failed request, read up to `MAX_ERROR_BYTES`.
async fn api_error(status: http::StatusCode, mut body: Body) -> kube::Error {
    let mut text = Vec::new();
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(SILENCE, body.frame()).await {
        if let Ok(data) = frame.into_data() {
            let room = MAX_ERROR_BYTES.saturating_sub(text.len());
            text.extend_from_slice(&data[..data.len().min(room)]);
            if room <= data.len() {
                break;
            }
        }
    }
    match serde_json::from_slice::<kube::core::Status>(&text) {
        // The answer's own code is the one to trust when the body names none.
        Ok(parsed) if parsed.code == 0 => {
            kube::Error::Api(Box::new(parsed.with_code(status.as_u16())))
        }
        Ok(parsed) => kube::Error::Api(Box::new(parsed)),
        Err(_) => {
            let message = String::from_utf8_lossy(&text).trim().to_string();
            kube::Error::Api(Box::new(
                kube::core::Status::failure(&message, "Failed to parse error data")
                    .with_code(status.as_u16()),
            ))
        }
    }
}

/// What to list.
#[derive(Debug, Clone)]
pub struct ListSpec {
    /// The collection's URL path, e.g. `/api/v1/namespaces/team-a/secrets`.
    pub path: String,
    pub labels: String,
    pub fields: Option<String>,
    pub page_size: u32,
    /// As `PartialObjectMetadata`: metadata only.
    pub metadata_only: bool,
}

impl ListSpec {
    /// The request for the page at `continue_token` (`None`: the first).
    pub fn request(&self, continue_token: Option<&str>) -> http::Request<Vec<u8>> {
        let mut params = ListParams::default()
            .labels(&self.labels)
            .limit(self.page_size);
        if let Some(fields) = &self.fields {
            params = params.fields(fields);
        }
        if let Some(token) = continue_token {
            params = params.continue_token(token);
        }
        let request = kube::core::Request::new(&self.path);
        let built = if self.metadata_only {
            request.list_metadata(&params)
        } else {
            request.list(&params)
        };
        built.expect("a list request from valid parameters")
    }
}

/// How many times a list starts again after its continue token expired (410).
const MAX_LIST_RESTARTS: u32 = 3;

/// How many times a page that failed otherwise is asked for again, waiting `RETRY_PAUSE`
/// doubled each time: a list of thousands of Secrets should not start over, or fail a whole
/// pass, for one dropped connection.
const MAX_PAGE_RETRIES: u32 = 3;
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// How one decoded item becomes what the caller keeps of it.
pub type Keep<T, U> = Box<dyn Fn(T) -> U + Send + Sync>;

/// A list read one page at a time, each item kept as `keep` says. A list whose continue
/// token expired (410) starts again, so an object may come twice; a page that failed
/// otherwise is asked for again from where it was.
pub struct Pages<T, U> {
    client: kube::Client,
    spec: ListSpec,
    keep: Keep<T, U>,
    continue_token: Option<String>,
    restarts: u32,
    done: bool,
}

impl<T: DeserializeOwned, U> Pages<T, U> {
    pub fn new(client: kube::Client, spec: ListSpec, keep: Keep<T, U>) -> Self {
        Self {
            client,
            spec,
            keep,
            continue_token: None,
            restarts: 0,
            done: false,
        }
    }

    /// The next page, or `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Vec<U>>, kube::Error> {
        let mut retries = 0;
        while !self.done {
            let request = self.spec.request(self.continue_token.as_deref());
            match page(&self.client, request, &self.keep).await {
                Ok(page) => {
                    self.continue_token = page.continue_token;
                    self.done = self.continue_token.is_none();
                    return Ok(Some(page.items));
                }
                Err(e) if status_code(&e) == Some(410) && self.restarts < MAX_LIST_RESTARTS => {
                    self.restarts += 1;
                    tracing::info!(
                        restarts = self.restarts,
                        "list continue token expired; listing again"
                    );
                    self.continue_token = None;
                }
                Err(e) if retries < MAX_PAGE_RETRIES && is_transient(&e) => {
                    let pause = RETRY_PAUSE * 2u32.pow(retries);
                    retries += 1;
                    tracing::warn!(
                        path = %self.spec.path,
                        "reading a list page failed; asking for it again in {}: {}",
                        humantime::format_duration(pause),
                        crate::k8s::describe(&e)
                    );
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

/// An error that asking again may mend: the connection, a silent answer, or the API
/// server's own 5xx and 429. Not a refusal (403, 404) nor an answer that does not decode.
pub fn is_transient(e: &kube::Error) -> bool {
    match status_code(e) {
        Some(code) => code == 429 || code >= 500,
        None => !matches!(e, kube::Error::SerdeError(_)),
    }
}
