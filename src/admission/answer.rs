//! Building AdmissionResponses: JSON patch operations, denials as kubectl shows them, and
//! messages cut to what the API server shows.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation};
use kube::core::admission::AdmissionResponse;
use serde_json::Value;

/// A denial as kubectl shows it: `Error from server (Forbidden): admission webhook ... denied
/// the request: <message>`.
pub(super) fn forbidden(response: AdmissionResponse, message: String) -> AdmissionResponse {
    // Every refusal is built within this; the cut is a last guard.
    let mut response = response.deny(short(&message, MAX_REFUSAL));
    response.result.code = 403;
    response.result.reason = "Forbidden".to_string();
    response
}

pub(super) fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

pub(super) fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

pub(super) fn remove(path: PointerBuf) -> PatchOperation {
    PatchOperation::Remove(RemoveOperation { path })
}

pub(super) fn with_ops(response: AdmissionResponse, ops: Vec<PatchOperation>) -> AdmissionResponse {
    if ops.is_empty() {
        return response;
    }
    response
        .with_patch(Patch(ops))
        .expect("a JSON patch always serializes")
}

/// Warnings over 256 characters may be cut by clients.
pub(super) fn short(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

/// With the cut mark, the 256 characters at which the API server cuts a warning.
pub(super) const MAX_WARNING: usize = 253;
/// With the cut mark, the longest refusal.
pub(super) const MAX_REFUSAL: usize = 509;
