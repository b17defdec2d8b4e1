//! The Kubernetes API as kubeecr uses it: connecting, scopes, paged lists, watches that keep
//! only what kubeecr needs of each item, and errors told on one line.

pub mod connect;
pub mod errors;
pub mod items;
pub mod list;
pub mod scope;
pub mod watch;

use kube::Client;

pub use connect::{KubeSettings, connect};
pub use errors::{ListError, causes, describe, status_code};
pub use scope::Scope;

/// One object by name, decoded into `T` (which may keep only part of it); `None` when it
/// does not exist.
pub async fn get<T: serde::de::DeserializeOwned>(
    client: &Client,
    collection: &str,
    name: &str,
) -> Result<Option<T>, kube::Error> {
    let request = kube::core::Request::new(collection)
        .get(name, &kube::api::GetParams::default())
        .map_err(kube::Error::BuildRequest)?;
    match client.request::<T>(request).await {
        Ok(object) => Ok(Some(object)),
        Err(e) if status_code(&e) == Some(404) => Ok(None),
        Err(e) => Err(e),
    }
}
