//! An AdmissionReview body, any bytes: decoded, validated and mutated (with a token at hand)
//! without a panic; every answer is for the request's uid.
#![no_main]

use std::sync::Arc;

use base64::Engine;
use kubeecr::admission::decision::{self, MutationPlan};
use kubeecr::admission::review;
use kubeecr::contract::policy::Policy;
use kubeecr::contract::token::{FetchedToken, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok(req) = review::decode(body) else {
        return;
    };
    let policy = Policy::default();
    assert_eq!(decision::validate(&req, &policy).uid, req.uid);
    let response = match decision::plan_mutation(&req, &policy) {
        MutationPlan::Respond(response) => *response,
        MutationPlan::Fill(pending) => {
            let fetched = FetchedToken {
                authorization_token: base64::engine::general_purpose::STANDARD
                    .encode("AWS:fuzz-password")
                    .into(),
                expires_at: None,
            };
            let expires = jiff::Timestamp::now() + std::time::Duration::from_secs(12 * 3600);
            let token = Arc::new(decode(&fetched, expires).unwrap());
            let tokens = pending
                .keys
                .iter()
                .map(|k| (k.clone(), token.clone()))
                .collect();
            pending.complete(Ok(tokens), false).response
        }
    };
    assert_eq!(response.uid, req.uid);
});
