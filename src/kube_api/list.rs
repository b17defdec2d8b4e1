//! A list request answered page by page, each page decoded item by item as its bytes arrive
//! (`items`), into whatever small type the caller keeps of an object. Memory then depends on
//! the largest object and on what is kept, never on what the objects of a page hold together.

use http_body_util::BodyExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use kube::api::ListParams;
use kube::client::Body;
use serde::de::DeserializeOwned;

use crate::kube_api::items::{FeedError, ListSplitter, Piece};
use crate::kube_api::status_code;

/// The largest object read, as JSON. etcd keeps objects under 1.5 MiB by default; this leaves
/// room for clusters that raised it.
pub const MAX_OBJECT_BYTES: usize = 16 << 20;

/// The largest error answer read.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// Bound on one list page: its answer streams, so a page that stalls mid-body would hang
/// for good without one (kube's client has no read timeout of its own).
pub const PAGE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// The error of a page that did not arrive within `PAGE_DEADLINE`.
pub fn page_timed_out() -> kube::Error {
    kube::Error::ReadEvents(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "the list page did not arrive within {}",
            humantime::format_duration(PAGE_DEADLINE)
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
    let response = client.send(request.map(Body::from)).await?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        return Err(api_error(status, body).await);
    }
    let mut splitter = ListSplitter::new(MAX_OBJECT_BYTES);
    let mut items = Vec::new();
    let mut meta: Option<ListMeta> = None;
    while let Some(frame) = body.frame().await {
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
    while let Some(Ok(frame)) = body.frame().await {
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

/// How one decoded item becomes what the caller keeps of it.
pub type Keep<T, U> = Box<dyn Fn(T) -> U + Send + Sync>;

/// A list read one page at a time, each item kept as `keep` says. A list whose continue
/// token expired (410) starts again, so an object may come twice.
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
        while !self.done {
            let request = self.spec.request(self.continue_token.as_deref());
            let page = tokio::time::timeout(PAGE_DEADLINE, page(&self.client, request, &self.keep))
                .await
                .unwrap_or_else(|_| Err(page_timed_out()));
            match page {
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
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}
