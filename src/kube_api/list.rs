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

/// One page of a list.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Where the next page starts; `None` after the last.
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
}

/// Sends `request` (a list, from `kube::core::Request`) and decodes its answer into a page.
/// Errors are kube's: the API server's `Status`, or transport; an answer that does not decode
/// is a `SerdeError` (which says where, and `describe` never quotes it).
pub async fn page<T: DeserializeOwned>(
    client: &kube::Client,
    request: http::Request<Vec<u8>>,
) -> Result<Page<T>, kube::Error> {
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
                    Piece::Item(bytes) => items.push(serde_json::from_slice(bytes)?),
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

/// A list read one page at a time. A list whose continue token expired (410) starts again,
/// so an object may come twice.
pub struct Pages<T> {
    client: kube::Client,
    spec: ListSpec,
    continue_token: Option<String>,
    restarts: u32,
    done: bool,
    _items: std::marker::PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Pages<T> {
    pub fn new(client: kube::Client, spec: ListSpec) -> Self {
        Self {
            client,
            spec,
            continue_token: None,
            restarts: 0,
            done: false,
            _items: std::marker::PhantomData,
        }
    }

    /// The next page, or `None` after the last.
    pub async fn next(&mut self) -> Result<Option<Vec<T>>, kube::Error> {
        while !self.done {
            let request = self.spec.request(self.continue_token.as_deref());
            match page::<T>(&self.client, request).await {
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
