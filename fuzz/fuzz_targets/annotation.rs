//! The `deft.com/kubeecr` annotation: never a panic; an accepted one is within the caps.
#![no_main]

use std::collections::BTreeMap;

use kubeecr::contract::annotation::{REGISTRIES_ANNOTATION, SecretRef, binding_of};
use kubeecr::contract::marks::Marks;
use kubeecr::contract::partition::Regions;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|value: &str| {
    let secret = SecretRef {
        namespace: "team-a".into(),
        name: "pull".into(),
    };
    let annotations = BTreeMap::from([(REGISTRIES_ANNOTATION.to_string(), value.to_string())]);
    match binding_of(&secret, &Marks::of_annotations(&annotations), &Regions::default()) {
        Ok(binding) => assert!(binding.is_some_and(|b| (1..=20).contains(&b.registries.len()))),
        Err(e) => assert!(e.to_string().len() <= 1024),
    }
});
