//! What each fuzz target checks, written once. The cargo fuzz targets (`fuzz_targets/`) call
//! these under libFuzzer; the test suite replays the committed corpus and every crash input
//! (`fuzz/corpus/`, `fuzz/regressions/`) through them on the stable toolchain
//! (`tests/integration/fuzz_replay.rs`). Each panics when an invariant breaks.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use kubeecr::admission::decision::{self, MutationPlan};
use kubeecr::admission::review;
use kubeecr::contract::annotation::{
    REGISTRIES_ANNOTATION, ROLE_ANNOTATION, SecretRef, binding_of,
};
use kubeecr::contract::dockerconfig::{RegistryCredential, credentials, fingerprint, merge};
use kubeecr::contract::marks::Marks;
use kubeecr::contract::partition::Regions;
use kubeecr::contract::plan::{self, Plan};
use kubeecr::contract::policy::{
    NamespaceRules, NamespaceSet, OWN_IDENTITY_FLAG, Policy, REGISTRY_FLAG, ROLE_FLAG,
};
use kubeecr::contract::secret_update::{self, DuePolicy};
use kubeecr::contract::token::{FetchedToken, Token, decode};
use kubeecr::refresher::wire::WireSecret;

/// The API server's cut of a warning, in characters.
pub const MAX_WARNING: usize = 256;
/// What the webhook keeps of a warning, within the API server's cut.
const WARNING_KEPT: usize = 200;
/// The longest refusal or Event note, in characters.
pub const MAX_REFUSAL: usize = 512;
/// The longest name a Secret can have.
const LONGEST_NAME: usize = 253;

/// The password every check fills with: easy to find if it leaks.
const PASSWORD: &str = "fuzz-password-5ecret";

fn token() -> Arc<Token> {
    let fetched = FetchedToken {
        authorization_token: base64::engine::general_purpose::STANDARD
            .encode(format!("AWS:{PASSWORD}"))
            .into(),
        expires_at: None,
    };
    let expires = jiff::Timestamp::now() + std::time::Duration::from_secs(12 * 3600);
    Arc::new(decode(&fetched, expires).expect("a valid token"))
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// A policy that refuses what it can: rules for other namespaces only, long ones. Built once.
static STRICT: std::sync::LazyLock<Policy> = std::sync::LazyLock::new(strict_policy);

fn strict_policy() -> Policy {
    let long = |i: usize| format!("team-{i}-{}", "x".repeat(50));
    Policy {
        allowed_registries: NamespaceRules::new(
            REGISTRY_FLAG,
            (0..10).map(|i| format!("{}=1111111111{i:02}/*", long(i))),
        ),
        allowed_role_arns: NamespaceRules::new(
            ROLE_FLAG,
            (0..10).map(|i| {
                format!(
                    "{}=arn:aws:iam::111111111111:role/{}-*",
                    long(i),
                    "r".repeat(60)
                )
            }),
        ),
        own_identity: NamespaceSet::parse(OWN_IDENTITY_FLAG, ["none"]).expect("valid"),
        namespaces: (0..10).map(long).collect(),
        ..Policy::default()
    }
}

/// `deft.com/kubeecr`, then on further lines `deft.com/kubeecr-hosts` and
/// `deft.com/kubeecr-role`, of a Secret with the longest namespace and name: accepted within
/// the caps, or refused (by its annotations, or by a strict policy) within the bounds a person
/// sees whole, every quote within its own.
pub fn annotation(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let registries = lines.next().unwrap_or_default();
    let hosts = lines.next();
    let role = lines.next();
    let secret = SecretRef::new("n".repeat(63), "n".repeat(LONGEST_NAME));
    let mut annotations =
        BTreeMap::from([(REGISTRIES_ANNOTATION.to_string(), registries.to_string())]);
    if let Some(hosts) = hosts {
        annotations.insert("deft.com/kubeecr-hosts".to_string(), hosts.to_string());
    }
    if let Some(role) = role {
        annotations.insert(ROLE_ANNOTATION.to_string(), role.to_string());
    }
    let marks = Marks::of_annotations(&annotations);
    let refused = match binding_of(&secret, &marks, &Regions::default()) {
        Ok(binding) => {
            let binding = binding.expect("opted in");
            assert!((1..=20).contains(&binding.registries.len()));
            assert!((1..=20).contains(&binding.targets().count()));
            assert!(secret_update::token_keys(&binding).len() <= 10);
            STRICT.admit(&secret, &binding).err()
        }
        Err(e) => Some(e),
    };
    let Some(e) = refused else {
        return;
    };
    let refusal = e.to_string();
    assert!(
        chars(&refusal) <= MAX_REFUSAL,
        "{}: {refusal}",
        chars(&refusal)
    );
    // The warning of an edit kubeecr lets through names no Secret; the webhook keeps its
    // first `WARNING_KEPT` characters, and the bad value is whole within them.
    let warning = format!("kubeecr leaves this Secret alone: {}", e.problem);
    if let Some(first) = quotes(&warning).first() {
        let end = warning[..warning.find(first).unwrap() + first.len()]
            .chars()
            .count();
        assert!(end <= WARNING_KEPT, "{end}: {warning}");
    }
    for quote in quotes(&refusal) {
        assert!(chars(quote) <= 64, "{}: {quote}", chars(quote));
    }
}

/// The quoted values of a message: `"..."`, escapes and all.
fn quotes(message: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = message;
    while let Some(start) = rest.find('"') {
        let after = &rest[start + 1..];
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let Some(end) = end else { break };
        out.push(&rest[start..start + 1 + end + 1]);
        rest = &after[end + 1..];
    }
    out
}

const HOST: &str = "123456789012.dkr.ecr.us-west-2.amazonaws.com";

/// A Secret's existing `.dockerconfigjson`, any bytes: a merge keeps it or refuses it; a merged
/// config merges again to itself (so an unchanged token is no write), and kubeecr's own entry
/// holds exactly the fresh credentials.
pub fn dockerconfig_merge(existing: &[u8]) {
    let cred = || RegistryCredential {
        host: HOST,
        username: "AWS",
        password: PASSWORD,
    };
    if let Ok(out) = merge(Some(existing), &[cred()]) {
        assert_eq!(merge(Some(&out), &[cred()]).as_deref(), Ok(&out[..]));
        let written = credentials(Some(&out)).expect("a merged config reads");
        let fresh = fingerprint(
            format!(
                r#"{{"username":"AWS","password":"{PASSWORD}","auth":"{}"}}"#,
                base64::engine::general_purpose::STANDARD.encode(format!("AWS:{PASSWORD}"))
            )
            .as_bytes(),
        );
        assert_eq!(
            written.get(HOST),
            Some(&fresh),
            "kubeecr's entry holds the fresh credentials"
        );
    }
}

/// An AdmissionReview body, any bytes: decoded, validated and mutated (with a token at hand)
/// without a panic; every answer is for the request's uid; no refusal or warning is longer
/// than a person is shown, or holds the password.
pub fn admission_review(body: &[u8]) {
    let Ok(req) = review::decode(body) else {
        return;
    };
    let policy = Policy::default();
    let validated = decision::validate(&req, &policy);
    assert_eq!(validated.uid, req.uid);
    let response = match decision::plan_mutation(&req, &policy) {
        MutationPlan::Respond(response) => *response,
        MutationPlan::Fill(pending) => {
            let token = token();
            let tokens = pending
                .keys
                .iter()
                .map(|k| (k.clone(), token.clone()))
                .collect();
            pending.complete(Ok(tokens), false).response
        }
    };
    assert_eq!(response.uid, req.uid);
    for answer in [&validated, &response] {
        let message = &answer.result.message;
        assert!(!message.contains(PASSWORD), "{message}");
        assert!(
            chars(message) <= MAX_REFUSAL,
            "{}: {message}",
            chars(message)
        );
        for warning in answer.warnings.iter().flatten() {
            assert!(chars(warning) <= MAX_WARNING, "{warning}");
            assert!(!warning.contains(PASSWORD));
        }
    }
}

/// A Secret as the refresher's watch delivers it (JSON, any bytes): kept and read without a
/// panic; its decision is one the refresher acts on, whichever way it is kept; a refusal is
/// within the bounds of an Event note; nothing kept or decided prints the password.
pub fn refresher_view(body: &[u8]) {
    let Ok(wire) = serde_json::from_slice::<WireSecret>(body) else {
        return;
    };
    let regions = Regions::default();
    let secret = wire.key();
    let policy = Policy::default();
    let due = DuePolicy {
        refresh_before: std::time::Duration::from_secs(4 * 3600),
        force: false,
    };
    let now = jiff::Timestamp::now();
    let kept = wire.clone().kept(&regions);
    let read = wire.read(&regions);
    for object in [&kept, &read] {
        let debug = format!("{object:?}");
        assert!(!debug.contains(PASSWORD), "{debug}");
        match plan::plan(&secret, object, &policy, due, now) {
            Plan::Skip(why) => {
                let note = why.to_string();
                assert!(chars(&note) <= MAX_REFUSAL, "{}: {note}", chars(&note));
            }
            Plan::Fill { binding, shape, .. } => {
                let token = token();
                let tokens = secret_update::token_keys(&binding)
                    .into_iter()
                    .map(|k| (k, token.clone()))
                    .collect();
                // A config kept without its data is read before a write: only a whole one,
                // or none, is merged into here.
                if let Ok(filled) =
                    secret_update::fill(&binding, shape, object.config.view().merge_base(), &tokens)
                {
                    assert!(!format!("{filled:?}").contains(PASSWORD));
                    let _ = plan::fill_patch(object, &binding, &filled);
                }
            }
            Plan::UpToDate { .. } | Plan::Release(_) => {}
        }
    }
}
