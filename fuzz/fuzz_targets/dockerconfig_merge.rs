//! A Secret's existing `.dockerconfigjson`, any bytes: never a panic; a merged config merges
//! again to itself (so an unchanged token is no write) and names kubeecr's registry.
#![no_main]

use kubeecr::contract::dockerconfig::{RegistryCredential, credentials, merge};
use libfuzzer_sys::fuzz_target;

const HOST: &str = "123456789012.dkr.ecr.us-west-2.amazonaws.com";

fuzz_target!(|existing: &[u8]| {
    let cred = || RegistryCredential {
        host: HOST,
        username: "AWS",
        password: "fuzz-password",
    };
    if let Ok(out) = merge(Some(existing), &[cred()]) {
        assert_eq!(merge(Some(&out), &[cred()]).as_deref(), Ok(&out[..]));
        assert!(credentials(Some(&out)).unwrap().contains_key(HOST));
    }
});
