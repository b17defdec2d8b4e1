//! The second step of mutation: a pending fill completed with the tokens fetched for it, or
//! without them, into the patch that writes what the Secret's shape holds. Pure.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use json_patch::PatchOperation;
use k8s_openapi::api::core::v1::Secret;
use kube::core::admission::AdmissionResponse;
use serde_json::{Value, json};

use super::answer::{MAX_WARNING, add, forbidden, pointer, short, with_ops};
use crate::contract::annotation::{EcrBinding, MANAGED_LABEL, SecretRef};
use crate::contract::dockerconfig::{self, DOCKER_CONFIG_JSON_KEY};
use crate::contract::kept::{KeptConfig, Stored};
use crate::contract::marks::Marks;
use crate::contract::secret_update;
use crate::contract::shape::{PASSWORD_KEY, Shape, USERNAME_KEY};
use crate::contract::token::{FetchError, Token, TokenKey};

/// What the API server requires of a `kubernetes.io/dockerconfigjson` Secret, and no more.
const EMPTY_CONFIG: &[u8] = br#"{"auths":{}}"#;

/// The answer to a fill, and whether it hands out a token (for the audit log).
pub struct Completion {
    pub response: AdmissionResponse,
    /// The patch writes `.dockerconfigjson` with ECR credentials in it.
    pub carries_token: bool,
    /// The `deft.com/kubeecr-expires-at` the patch writes, when it carries a token.
    pub expires_at: Option<String>,
}

pub struct PendingFill {
    pub secret: SecretRef,
    pub keys: Vec<TokenKey>,
    pub(super) response: AdmissionResponse,
    pub(super) binding: EcrBinding,
    pub(super) shape: Shape,
    pub(super) marks: Marks,
    pub(super) object: Secret,
    pub(super) dry_run: bool,
}

impl PendingFill {
    /// For a write that would give the Secret its first token (no recorded expiry yet, not a
    /// dry run): a note that says so, for an Event.
    pub fn first_fill(&self) -> Option<String> {
        if self.dry_run || !secret_update::is_first_fill(&self.marks) {
            return None;
        }
        Some(format!(
            "filled at admission with ECR tokens for {}",
            self.registries()
        ))
    }

    /// The registries of the annotation, `account/region, ...`.
    pub fn registries(&self) -> String {
        let registries: Vec<String> = self
            .binding
            .registries
            .iter()
            .map(ToString::to_string)
            .collect();
        registries.join(", ")
    }

    /// With `--admission-fill=false`: only what the API server needs, never a token (see
    /// `required_data`), and the managed label, so that the refresher, which watches labelled
    /// Secrets in full, fills it within moments.
    pub fn placeholder(self) -> AdmissionResponse {
        let ops = self
            .required_data()
            .into_iter()
            .chain(self.set_label())
            .collect();
        with_ops(self.response, ops)
    }

    /// What the API server requires of the Secret's type, when it is missing: `{"auths":{}}`
    /// for a dockerconfigjson Secret, `username: AWS` for a basic-auth one with neither key.
    fn required_data(&self) -> Vec<PatchOperation> {
        let has = |key: &str| self.value(key).is_some();
        match self.shape {
            Shape::DockerConfig if !has(DOCKER_CONFIG_JSON_KEY) => {
                self.set_data(&[(DOCKER_CONFIG_JSON_KEY, EMPTY_CONFIG)])
            }
            Shape::BasicAuth if !has(USERNAME_KEY) && !has(PASSWORD_KEY) => {
                self.set_data(&[(USERNAME_KEY, b"AWS")])
            }
            _ => Vec::new(),
        }
    }

    fn value(&self, key: &str) -> Option<&[u8]> {
        self.object
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.as_slice())
    }

    fn existing(&self) -> Option<&[u8]> {
        dockerconfig::of_secret(&self.object)
    }

    /// What the Secret holds of kubeecr's credentials, as the refresher would keep it.
    fn held(&self) -> KeptConfig {
        let stored = Stored::of_secret(&self.object);
        if self.shape.holds_one_host() {
            let own: Vec<(String, String)> = self
                .binding
                .targets()
                .map(|t| (t.key(), t.host()))
                .collect();
            return KeptConfig::of_basic(stored.basic.as_deref(), &own, &self.marks);
        }
        stored
            .dockerconfigjson
            .map_or(KeptConfig::Absent, |c| KeptConfig::Whole(c.into()))
    }

    /// Patch ops that set each key to its bytes, creating `data` when missing.
    fn set_data(&self, values: &[(&str, &[u8])]) -> Vec<PatchOperation> {
        let changed: Vec<(&str, Value)> = values
            .iter()
            .filter(|(k, v)| self.value(k) != Some(*v))
            .map(|(k, v)| (*k, json!(STANDARD.encode(v))))
            .collect();
        match &self.object.data {
            _ if changed.is_empty() => Vec::new(),
            Some(_) => changed
                .into_iter()
                .map(|(k, v)| add(pointer(&["data", k]), v))
                .collect(),
            None => {
                let data: serde_json::Map<String, Value> = changed
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
                vec![add(pointer(&["data"]), Value::Object(data))]
            }
        }
    }

    /// Sets kubeecr's annotations to `values` (opted-in Secrets always carry annotations).
    fn set_annotations(&self, values: &[(&'static str, String)]) -> Vec<PatchOperation> {
        let annotations = self.object.metadata.annotations.as_ref();
        values
            .iter()
            .filter(|(k, v)| annotations.and_then(|a| a.get(*k)) != Some(v))
            .map(|(k, v)| add(pointer(&["metadata", "annotations", k]), json!(v)))
            .collect()
    }

    /// Labels the Secret as managed, so that the refresher watches it in full.
    fn set_label(&self) -> Option<PatchOperation> {
        if self.marks.is_labelled() {
            return None;
        }
        Some(match &self.object.metadata.labels {
            Some(_) => add(
                pointer(&["metadata", "labels", MANAGED_LABEL]),
                json!("true"),
            ),
            None => add(
                pointer(&["metadata", "labels"]),
                json!({ MANAGED_LABEL: "true" }),
            ),
        })
    }

    /// The second step: the patch for the fetched tokens, or what to do without them.
    pub fn complete(
        self,
        tokens: Result<BTreeMap<TokenKey, Arc<Token>>, FetchError>,
        require_token: bool,
    ) -> Completion {
        let no_token = |response| Completion {
            response,
            carries_token: false,
            expires_at: None,
        };
        let tokens = match tokens {
            Ok(tokens) => tokens,
            Err(e) => return no_token(self.without_token(&e, require_token)),
        };
        let filled = match secret_update::fill(&self.binding, self.shape, self.existing(), &tokens)
        {
            Ok(filled) => filled,
            Err(e) => {
                return no_token(forbidden(
                    self.response,
                    format!("{}: {e}", self.secret.short()),
                ));
            }
        };
        if self.holds_newer_token(&filled) {
            let ops = self.set_label().into_iter().collect();
            return no_token(with_ops(self.response, ops));
        }
        let values: Vec<(&str, &[u8])> = filled
            .data
            .iter()
            .map(|(k, v)| (*k, v.as_slice()))
            .collect();
        let mut ops = self.set_data(&values);
        let carries_token = !ops.is_empty();
        ops.extend(self.set_annotations(&filled.annotations()));
        ops.extend(self.set_label());
        Completion {
            response: with_ops(self.response, ops),
            carries_token,
            expires_at: carries_token.then(|| secret_update::format_expiry(filled.expires_at)),
        }
    }

    /// The object already holds kubeecr's credentials for every registry (fingerprints match),
    /// recorded to expire no earlier than the cached token: another writer (a refresher
    /// elsewhere, a CronJob) was fresher, so its token stays rather than being replaced by an
    /// older one. Credentials edited by hand never match, so they are replaced.
    fn holds_newer_token(&self, filled: &secret_update::Filled) -> bool {
        let recorded = self
            .marks
            .expires_at()
            .and_then(|v| v.parse::<jiff::Timestamp>().ok());
        let believable =
            recorded.is_some_and(|r| secret_update::is_believable(r, jiff::Timestamp::now()));
        if !believable || recorded.is_none_or(|r| r < filled.expires_at) {
            return false;
        }
        secret_update::holds_own_credentials(&self.binding, &self.marks, self.held().view())
    }

    /// AWS failed or was too slow. The write goes through (with `{"auths":{}}` when it has
    /// no `.dockerconfigjson`, so that the API server accepts it) and the refresher fills it
    /// later; with `--require-token` it is denied instead.
    fn without_token(self, error: &FetchError, require_token: bool) -> AdmissionResponse {
        if require_token {
            let message = format!(
                "{}: no ECR token could be fetched, and this kubeecr requires one (--require-token): {}",
                self.secret.short(),
                error.brief()
            );
            return forbidden(self.response, message);
        }
        let data = self.required_data();
        let outcome = match self.shape {
            _ if data.is_empty() => "the Secret is stored without a new token",
            Shape::DockerConfig => {
                "the Secret is stored with an empty {\"auths\":{}} (not usable yet)"
            }
            _ => "the Secret is stored without a password (not usable yet)",
        };
        // The cause first: the API server cuts warnings at 256 characters.
        let warning = short(
            &format!(
                "kubeecr: {}; {outcome}, filled when ECR answers",
                error.brief()
            ),
            MAX_WARNING,
        );
        let ops = data.into_iter().chain(self.set_label()).collect();
        let mut response = with_ops(self.response, ops);
        response.warnings = Some(vec![warning]);
        response
    }
}
