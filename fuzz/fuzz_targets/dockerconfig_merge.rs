//! A Secret's existing `.dockerconfigjson`, any bytes: `checks::dockerconfig_merge`.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::dockerconfig_merge(data));
