//! A Secret as the refresher's watch delivers it, any bytes: `checks::refresher_view`.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::refresher_view(data));
