//! The ECR token source: GetAuthorizationToken through the AWS SDK.
//!
//! Credentials come from aws-config's default chain (env keys, IRSA web identity, EKS Pod
//! Identity, profiles), and from STS AssumeRole for secrets that name a role.

use std::collections::HashMap;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ecr::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use futures::future::BoxFuture;
use jiff::Timestamp;
use secrecy::SecretString;
use std::sync::Mutex;

use crate::contract::token::{FetchError, FetchErrorKind};
use crate::contract::token::{FetchedToken, TokenKey};
use crate::tokens::cache::TokenSource;

/// Where and how to reach AWS.
#[derive(Debug, Clone, Default)]
pub struct EcrSettings {
    /// ECR endpoint override (VPC endpoint, tests). `AWS_ENDPOINT_URL_ECR` and
    /// `AWS_ENDPOINT_URL` are honoured by the SDK when this is unset.
    pub ecr_endpoint: Option<String>,
    /// STS endpoint override, for AssumeRole.
    pub sts_endpoint: Option<String>,
    /// Bound on one call, retries included.
    pub call_timeout: Duration,
}

/// The AWS config kubeecr runs with: the default chains, ring-based TLS, bounded calls.
pub fn config_loader(settings: &EcrSettings) -> aws_config::ConfigLoader {
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(settings.call_timeout.min(Duration::from_secs(10)))
                .operation_timeout(settings.call_timeout)
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(3))
}

pub struct EcrTokenSource {
    base: SdkConfig,
    settings: EcrSettings,
    clients: Mutex<HashMap<TokenKey, aws_sdk_ecr::Client>>,
}

impl EcrTokenSource {
    /// Loads the default credential chain once; clients per key are built lazily.
    pub async fn from_env(settings: EcrSettings) -> Self {
        Self::new(config_loader(&settings).load().await, settings)
    }

    pub fn new(base: SdkConfig, settings: EcrSettings) -> Self {
        // Each client gets its key's region; the base one only serves STS for web identity.
        let base = match base.region() {
            Some(_) => base,
            None => base
                .into_builder()
                .region(Region::from_static("us-east-1"))
                .build(),
        };
        Self {
            base,
            settings,
            clients: Mutex::default(),
        }
    }

    /// The key's client, built on first use. The cache fetches one key at a time, so two
    /// builds for one key do not race; `forget` drops it with the cache's key.
    async fn client(&self, key: &TokenKey) -> aws_sdk_ecr::Client {
        if let Some(client) = self.clients.lock().expect("clients lock").get(key) {
            return client.clone();
        }
        let region = Region::new(key.region.clone());
        let mut config = aws_sdk_ecr::config::Builder::from(&self.base).region(region.clone());
        if let Some(endpoint) = &self.settings.ecr_endpoint {
            config = config.endpoint_url(endpoint);
        }
        if let Some(role) = &key.role {
            let mut sts = self.base.clone().into_builder();
            if let Some(endpoint) = &self.settings.sts_endpoint {
                sts = sts.endpoint_url(endpoint);
            }
            let provider = aws_config::sts::AssumeRoleProvider::builder(role.as_str())
                .session_name("kubeecr")
                .region(region)
                .configure(&sts.build())
                .build()
                .await;
            config = config.credentials_provider(provider);
        }
        let client = aws_sdk_ecr::Client::from_conf(config.build());
        self.clients
            .lock()
            .expect("clients lock")
            .insert(key.clone(), client.clone());
        client
    }

    fn endpoint_note(&self) -> String {
        match &self.settings.ecr_endpoint {
            Some(endpoint) => format!(" (endpoint {endpoint})"),
            None => String::new(),
        }
    }
}

/// AWS error codes that mean the principal was refused.
const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "MissingAuthenticationToken",
    "InvalidIdentityToken",
    "IDPRejectedClaim",
];

/// AWS error codes that ask for fewer calls.
const THROTTLED_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
];

/// The kind of a failed call, and AWS's error code when it answered with one. Credentials
/// that could not be had (no keys, an AssumeRole that STS refused) are found in the chain.
fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    e: &SdkError<E>,
) -> (FetchErrorKind, Option<String>) {
    if let SdkError::ServiceError(service) = e {
        let code = service.err().code().map(str::to_string);
        let kind = match code.as_deref() {
            Some(c) if DENIED_CODES.contains(&c) => FetchErrorKind::Denied,
            Some(c) if THROTTLED_CODES.contains(&c) => FetchErrorKind::Throttled,
            _ => FetchErrorKind::Service,
        };
        return (kind, code);
    }
    if let SdkError::TimeoutError(_) = e {
        return (FetchErrorKind::Timeout, None);
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cause {
        if let Some(creds) = err.downcast_ref::<CredentialsError>() {
            let kind = match creds {
                CredentialsError::CredentialsNotLoaded(_) => FetchErrorKind::NoCredentials,
                CredentialsError::ProviderTimedOut(_) => FetchErrorKind::Timeout,
                _ if is_denial(&DisplayErrorContext(creds).to_string()) => FetchErrorKind::Denied,
                _ => FetchErrorKind::Unreachable,
            };
            return (kind, None);
        }
        cause = err.source();
    }
    (FetchErrorKind::Unreachable, None)
}

/// An STS refusal inside a credentials error, which carries no code of its own.
fn is_denial(chain: &str) -> bool {
    DENIED_CODES.iter().any(|c| chain.contains(c)) || chain.contains("not authorized")
}

impl TokenSource for EcrTokenSource {
    fn fetch<'a>(&'a self, key: &'a TokenKey) -> BoxFuture<'a, Result<FetchedToken, FetchError>> {
        Box::pin(async move {
            let client = self.client(key).await;
            let error = |kind, message: String| FetchError::new(key, kind, message);
            let out = client.get_authorization_token().send().await.map_err(|e| {
                let (kind, code) = classify(&e);
                let message = format!(
                    "GetAuthorizationToken failed{}: {}",
                    self.endpoint_note(),
                    DisplayErrorContext(&e)
                );
                FetchError::new(key, kind, message).with_code(code.as_deref())
            })?;
            let data = out.authorization_data().first().ok_or_else(|| {
                error(
                    FetchErrorKind::Malformed,
                    "GetAuthorizationToken returned no authorizationData".into(),
                )
            })?;
            let token = data.authorization_token().ok_or_else(|| {
                error(
                    FetchErrorKind::Malformed,
                    "GetAuthorizationToken returned no authorizationToken".into(),
                )
            })?;
            Ok(FetchedToken {
                authorization_token: SecretString::from(token.to_string()),
                expires_at: data
                    .expires_at()
                    .and_then(|t| Timestamp::from_second(t.secs()).ok()),
            })
        })
    }

    fn forget(&self, key: &TokenKey) {
        self.clients.lock().expect("clients lock").remove(key);
    }
}
