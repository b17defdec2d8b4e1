//! `.dockerconfigjson` merge: writes kubeecr's registries and keeps everything else, byte for
//! byte.
//!
//! What it guarantees about the content:
//! - Every byte outside kubeecr's own `auths` entries is copied unchanged: whitespace, escapes,
//!   number spellings (`1.0e2`, 30-digit integers), duplicate keys, key order, nesting of any
//!   depth, and strings that are not valid UTF-8 (Go, and so the API server, accepts them).
//! - kubeecr's entries for a host `H` are the `auths` keys that the kubelet's keyring files
//!   under `H` itself: `H`, `https://H`, `http://H`, `H/`, `https://H/v2/` (lower-case scheme
//!   only; a path other than `/`, `/v1/` or `/v2/` scopes an entry to part of the host, and
//!   upper-case hosts never match an image). Each gets the fresh credentials and keeps its key
//!   as written and its other fields (`identitytoken`, `email`, ...), losing only its old
//!   `username`, `password` and `auth`; a bare `H` is always there afterwards. Path-scoped
//!   and upper-case forms are someone else's and stay as they are.
//! - Field names match as Go's encoding/json (and so the kubelet) matches them, case-folded: an
//!   `Auth` left behind would override the fresh `auth`. With several top-level `auths`, the
//!   last one is updated: Go reads them in order, so its entries win.
//! - Input that is not JSON, or not shaped like `{"auths":{...}}`, is refused, never rewritten.
//!   Errors give a position, never content: the input holds passwords.
//! - Pure and deterministic, and merging its own output again gives the same bytes, so an
//!   unchanged token means no write.
//!
//! An iterative scanner (`json_spans`: RFC 8259, no recursion, so no depth limit) checks the
//! whole input and records the byte spans of object members; the merge splices new bytes
//! between those spans.
//!
//! The parts: `document` reads a config as the kubelet does, `merge` writes into it, and
//! `fingerprint` says what credentials it holds.

mod document;
mod fingerprint;
mod merge;
#[cfg(test)]
mod tests;

pub use fingerprint::{Credentials, credentials, fingerprint, fingerprint_of};
pub use merge::{bare_entries, merge, strip};

use k8s_openapi::api::core::v1::Secret;

use crate::contract::json_spans::SyntaxError;

/// A Secret's `.dockerconfigjson`, when it has one.
pub fn of_secret(secret: &Secret) -> Option<&[u8]> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(DOCKER_CONFIG_JSON_KEY))
        .map(|b| b.0.as_slice())
}

/// The data key of a `kubernetes.io/dockerconfigjson` Secret.
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";

/// Credentials for one registry host.
pub struct RegistryCredential<'a> {
    pub host: &'a str,
    pub username: &'a str,
    pub password: &'a str,
}

/// The existing `.dockerconfigjson` cannot be merged without losing what it holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerConfigError {
    /// What is wrong and where (line and column); never any content.
    #[error(
        "{DOCKER_CONFIG_JSON_KEY} is not valid JSON ({0}); fix it, or delete the key and kubeecr writes a new one"
    )]
    NotJson(String),
    #[error(
        "{DOCKER_CONFIG_JSON_KEY} is JSON but not an object; it must look like {{\"auths\":{{...}}}}, or delete the key and kubeecr writes a new one"
    )]
    NotObject,
    #[error(
        "{DOCKER_CONFIG_JSON_KEY} has an \"auths\" that is not an object; it must look like {{\"auths\":{{\"<host>\":{{...}}}}}}"
    )]
    AuthsNotObject,
}

/// Errors give a position, never content: the input holds passwords.
fn not_json(input: &[u8], e: &SyntaxError) -> DockerConfigError {
    DockerConfigError::NotJson(e.describe(input))
}
