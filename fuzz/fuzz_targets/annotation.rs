//! The `deft.com/kubeecr` annotation (and, after a newline, `deft.com/kubeecr-hosts`):
//! `checks::annotation`.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::annotation(data));
