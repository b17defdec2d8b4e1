//! AdmissionReview v1 on the wire: the request read from a body, the response written.
//! Pure; the HTTP layer is `webhook`.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube::core::DynamicObject;
use kube::core::Status;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use serde::Serialize;

/// The request in an AdmissionReview body. Errors name the kind of problem and where it is,
/// never the body's content.
pub fn decode(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, String> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "JSON of the wrong shape",
            serde_json::error::Category::Eof => "cut short",
        };
        format!(
            "body is not an admission.k8s.io/v1 AdmissionReview: {what} at line {} column {}",
            e.line(),
            e.column()
        )
    })?;
    review
        .try_into()
        .map_err(|e: kube::core::admission::ConvertAdmissionReviewError| {
            format!("AdmissionReview has no usable request: {e}")
        })
}

/// The AdmissionReview carrying `response`, as bytes. kube's own encoding writes the patch as
/// an array of numbers, which the API server accepts; base64, as Go writes a `[]byte`, is
/// about a third of the size and cheaper to write and to read.
pub fn encode(response: &AdmissionResponse) -> Vec<u8> {
    let review = WireReview {
        api_version: "admission.k8s.io/v1",
        kind: "AdmissionReview",
        response: WireResponse {
            uid: &response.uid,
            allowed: response.allowed,
            status: &response.result,
            patch: response.patch.as_deref().map(|p| STANDARD.encode(p)),
            patch_type: response.patch.as_ref().map(|_| "JSONPatch"),
            audit_annotations: &response.audit_annotations,
            warnings: response.warnings.as_deref(),
        },
    };
    serde_json::to_vec(&review).expect("an AdmissionReview always serializes")
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireReview<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: WireResponse<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse<'a> {
    uid: &'a str,
    allowed: bool,
    status: &'a Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    audit_annotations: &'a HashMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<&'a [String]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same answer as kube's encoding, but for the patch's form: what the API server reads
    /// is unchanged.
    #[test]
    fn encodes_what_kube_encodes_with_a_base64_patch() {
        let body = include_bytes!(
            "../../tests/fixtures/admission/07-annotate-existing-mutate-update.json"
        );
        let fixture: serde_json::Value = serde_json::from_slice(body).unwrap();
        let req = decode(&serde_json::to_vec(&fixture["review"]).unwrap()).unwrap();
        let mut response = AdmissionResponse::from(&req)
            .with_patch(json_patch::Patch(vec![]))
            .unwrap();
        response.warnings = Some(vec!["w".into()]);
        response.result.message = "m".into();
        let ours: serde_json::Value = serde_json::from_slice(&encode(&response)).unwrap();
        let mut kubes = serde_json::to_value(response.clone().into_review()).unwrap();
        let patch: Vec<u8> = serde_json::from_value(kubes["response"]["patch"].take()).unwrap();
        kubes["response"]["patch"] = STANDARD.encode(&patch).into();
        assert_eq!(ours, kubes);
        assert_eq!(ours["response"]["patch"], "W10=");

        let allowed = AdmissionResponse::from(&req);
        let ours: serde_json::Value = serde_json::from_slice(&encode(&allowed)).unwrap();
        assert_eq!(ours, serde_json::to_value(allowed.into_review()).unwrap());
    }
}
