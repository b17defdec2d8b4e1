//! Tests of the merge, the fingerprints and the reading they share, and the fixtures they use.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::RegistryCredential;
use super::fingerprint::FINGERPRINT_BYTES;
// The functions only: the test modules of the same names are declared below.
use super::merge::{json_string, merge};

mod document;
mod fingerprint;
mod generators;
mod merge;
mod properties;

const HOST: &str = "123456789012.dkr.ecr.us-west-2.amazonaws.com";
const OTHER: &str = "210987654321.dkr.ecr.eu-west-1.amazonaws.com";

fn cred(host: &str) -> RegistryCredential<'_> {
    RegistryCredential {
        host,
        username: "AWS",
        password: "pw-1",
    }
}

/// The object kubeecr writes for `cred`.
fn fresh(password: &str) -> String {
    format!(
        r#"{{"username":"AWS","password":{},"auth":"{}"}}"#,
        json_string(password),
        STANDARD.encode(format!("AWS:{password}"))
    )
}

fn merged(existing: &str, creds: &[RegistryCredential<'_>]) -> String {
    String::from_utf8(merge(Some(existing.as_bytes()), creds).unwrap()).unwrap()
}

/// `s` with `{H}` standing for `HOST` and `{F}` for `fresh("pw-1")`.
fn t(s: &str) -> String {
    s.replace("{H}", HOST).replace("{F}", &fresh("pw-1"))
}

/// The fingerprint as computed before the merge was lossless, on serde_json values.
fn serde_fingerprint(entry: &Value) -> String {
    let field = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or("");
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for k in ["username", "password", "auth"] {
        ctx.update(field(k).as_bytes());
        ctx.update(&[0]);
    }
    ctx.finish().as_ref()[..FINGERPRINT_BYTES]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
