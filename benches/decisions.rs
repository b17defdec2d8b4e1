//! The pure decisions on the hot paths: annotation parsing, the `.dockerconfigjson` merge,
//! and a whole admission decision for a captured AdmissionReview. See BENCHMARKS.md.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use criterion::{Criterion, criterion_group, criterion_main};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use kubeecr::admission::decision::{MutationPlan, plan_mutation};
use kubeecr::contract::annotation::parse_registries;
use kubeecr::contract::dockerconfig::{RegistryCredential, merge};
use kubeecr::contract::policy::Policy;
use kubeecr::contract::token::{FetchedToken, decode};
use secrecy::SecretString;
use serde_json::json;

const PASSWORD: &str = "eyJwYXlsb2FkIjoiYmVuY2htYXJrIiwidmVyc2lvbiI6IjIifQ-a-realistically-long-ecr-password-of-about-two-kilobytes";

fn config_with_foreign(n: usize) -> Vec<u8> {
    let auths: serde_json::Map<String, serde_json::Value> = (0..n)
        .map(|i| {
            (
                format!("registry-{i}.example.com"),
                json!({"auth": STANDARD.encode(format!("user{i}:pass{i}"))}),
            )
        })
        .collect();
    serde_json::to_vec(&json!({"auths": auths})).unwrap()
}

fn bench_merge(c: &mut Criterion) {
    let password = PASSWORD.repeat(20);
    let hosts = [
        "123456789012.dkr.ecr.us-west-2.amazonaws.com",
        "210987654321.dkr.ecr.us-west-2.amazonaws.com",
        "123456789012.dkr.ecr.eu-central-1.amazonaws.com",
    ];
    let creds: Vec<RegistryCredential<'_>> = hosts
        .iter()
        .map(|host| RegistryCredential {
            host,
            username: "AWS",
            password: &password,
        })
        .collect();
    for n in [1, 50] {
        let existing = config_with_foreign(n);
        c.bench_function(&format!("merge 3 registries into {n} foreign auths"), |b| {
            b.iter(|| merge(black_box(Some(&existing)), black_box(&creds)).unwrap())
        });
    }
}

fn bench_parse(c: &mut Criterion) {
    let value = "111111111111/us-west-2, 222222222222/eu-central-1,333333333333/cn-north-1, 444444444444/us-gov-west-1,555555555555/ap-south-1";
    c.bench_function("parse 5-entry annotation", |b| {
        let regions = Default::default();
        b.iter(|| parse_registries(black_box(value), &regions).unwrap())
    });
}

fn bench_admission(c: &mut Criterion) {
    let fixture: serde_json::Value = serde_json::from_slice(
        &std::fs::read("tests/fixtures/admission/07-annotate-existing-mutate-update.json").unwrap(),
    )
    .unwrap();
    let body = serde_json::to_vec(&fixture["review"]).unwrap();
    let policy = Policy::default();
    let fetched = FetchedToken {
        authorization_token: SecretString::from(
            STANDARD.encode(format!("AWS:{}", PASSWORD.repeat(20))),
        ),
        expires_at: None,
    };
    let token = Arc::new(
        decode(
            &fetched,
            jiff::Timestamp::now() + jiff::SignedDuration::from_hours(12),
        )
        .unwrap(),
    );
    c.bench_function(
        "mutate decision (parse review, plan, patch) for fixture 07",
        |b| {
            b.iter(|| {
                let review: AdmissionReview<DynamicObject> =
                    serde_json::from_slice(black_box(&body)).unwrap();
                let req: AdmissionRequest<DynamicObject> = review.try_into().unwrap();
                let MutationPlan::Fill(pending) = plan_mutation(&req, &policy) else {
                    panic!("fixture 07 is opted in")
                };
                let tokens: BTreeMap<_, _> = pending
                    .keys
                    .iter()
                    .map(|k| (k.clone(), Arc::clone(&token)))
                    .collect();
                serde_json::to_vec(&pending.complete(Ok(tokens), false).response.into_review())
                    .unwrap()
            })
        },
    );
}

criterion_group!(benches, bench_merge, bench_parse, bench_admission);
criterion_main!(benches);
