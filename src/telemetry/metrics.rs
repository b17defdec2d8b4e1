//! Prometheus metrics, served on the admin port's `/metrics`.
//!
//! Label values come from small fixed sets (outcomes, states, webhooks, operations) or from
//! what the operator bounds (regions, allowed roles): never a Secret or a namespace.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::contract::token::FetchErrorKind;

/// A label whose values are a fixed set: the enum, its values as written, and all of them
/// (so that their series can start at zero).
macro_rules! label_values {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $value:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$(Self::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $value,)+
                }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
                encoder.write_str(self.as_str())
            }
        }
    };
}

label_values! {
    /// How an opted-in Secret stands, as the refresher sees it.
    pub enum SecretState {
        /// Filled, and scheduled for its next refresh.
        Filled => "filled",
        /// Waiting for its first or next write.
        Due => "due",
        /// Its last refresh failed; retried with backoff.
        Failing => "failing",
        /// Not kubeecr's to fill: malformed annotation, wrong type, refused by policy.
        Invalid => "invalid",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: SecretState,
}

label_values! {
    /// What one refresh of one Secret did.
    pub enum RefreshOutcome {
        Refreshed => "refreshed",
        Unchanged => "unchanged",
        Released => "released",
        Skipped => "skipped",
        Failed => "failed",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: RefreshOutcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// `default` for the workload's own credentials, else the role ARN.
    pub principal: String,
    pub region: String,
}

label_values! {
    /// What a GetAuthorizationToken call came to.
    pub enum EcrResult {
        Ok => "ok",
        Denied => "denied",
        NoCredentials => "no_credentials",
        Throttled => "throttled",
        Service => "service",
        Unreachable => "unreachable",
        Timeout => "timeout",
        Malformed => "malformed",
        TooSoon => "too_soon",
    }
}

impl From<FetchErrorKind> for EcrResult {
    fn from(kind: FetchErrorKind) -> Self {
        match kind {
            FetchErrorKind::Denied => Self::Denied,
            FetchErrorKind::NoCredentials => Self::NoCredentials,
            FetchErrorKind::Throttled => Self::Throttled,
            FetchErrorKind::Service => Self::Service,
            FetchErrorKind::Unreachable => Self::Unreachable,
            FetchErrorKind::Timeout => Self::Timeout,
            FetchErrorKind::Malformed => Self::Malformed,
            FetchErrorKind::TooSoon => Self::TooSoon,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EcrCallLabels {
    pub region: String,
    pub result: EcrResult,
}

label_values! {
    pub enum Webhook {
        Mutate => "mutate",
        Validate => "validate",
    }
}

label_values! {
    /// What an admission answered.
    pub enum AdmissionResult {
        Allowed => "allowed",
        /// Allowed with a patch.
        Patched => "patched",
        Denied => "denied",
        /// Allowed with a warning (admitted without a token, or a Secret kubeecr leaves alone).
        Warned => "warned",
        /// A malformed review: 400 or 413.
        Invalid => "invalid",
    }
}

label_values! {
    pub enum AdmissionOperation {
        Create => "CREATE",
        Update => "UPDATE",
        Delete => "DELETE",
        Connect => "CONNECT",
        /// A malformed review, whose operation was never read.
        Unknown => "unknown",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub webhook: Webhook,
    pub operation: AdmissionOperation,
    pub result: AdmissionResult,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub webhook: Webhook,
}

label_values! {
    /// Whether a client certificate that --client-ca-file verified vouched for the review.
    pub enum Client {
        Verified => "verified",
        Unverified => "unverified",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenResponseLabels {
    pub client: Client,
}

label_values! {
    /// The two Secret watches.
    pub enum Watch {
        /// kubeecr's Secrets, in full.
        Managed => "managed",
        /// Every other Secret, metadata only.
        Metadata => "metadata",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    pub watch: Watch,
}

label_values! {
    /// kubeecr's two servers.
    pub enum Server {
        Webhook => "webhook",
        Admin => "admin",
    }
}

label_values! {
    /// Why a server refused a request, closed a connection, or held new connections back.
    pub enum Refusal {
        /// 413: the body is larger than `--max-request-bytes` (declared or read).
        TooLarge => "too_large",
        /// 503: `--max-concurrent-requests` are in flight.
        Busy => "busy",
        /// 503: the bodies in flight already hold `--max-buffered-request-bytes`.
        BodyBudget => "body_budget",
        /// 408: the body did not arrive within `--request-body-timeout`.
        BodyTimeout => "body_timeout",
        /// 503: no answer within `--request-timeout`.
        RequestTimeout => "request_timeout",
        /// The connection was closed: no TLS handshake within its bound.
        HandshakeTimeout => "handshake_timeout",
        /// Accepting paused: `--max-connections` are open; new ones wait in the listen backlog.
        ConnectionLimit => "connection_limit",
        /// The connection was closed at once: its address already holds its share of
        /// connections.
        PeerLimit => "peer_limit",
        /// The connection was closed: the TLS handshake failed (no or a wrong client
        /// certificate, plain HTTP on the HTTPS port).
        HandshakeFailed => "handshake_failed",
        /// The connection was closed before its handshake ended: every handshake slot was
        /// taken, and it was the oldest, making room for a new connection.
        HandshakeEvicted => "handshake_evicted",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub server: Server,
    pub reason: Refusal,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub server: Server,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub leader: Gauge,
    pub secrets: Family<StateLabels, Gauge>,
    pub refreshes: Family<OutcomeLabels, Counter>,
    pub token_expiry: Family<TokenLabels, Gauge<f64, AtomicU64>>,
    pub ecr_calls: Family<EcrCallLabels, Counter>,
    pub admission_requests: Family<AdmissionLabels, Counter>,
    pub admission_duration: Family<WebhookLabels, Histogram>,
    pub admission_tokens: Family<TokenResponseLabels, Counter>,
    pub watch_errors: Family<WatchLabels, Counter>,
    pub lease_errors: Counter,
    pub queue_depth: Gauge,
    pub token_cache_keys: Gauge,
    pub events_dropped: Counter,
    pub events_unconfirmed: Counter,
    pub http_refused: Family<RefusalLabels, Counter>,
    pub http_connections: Family<ServerLabels, Gauge>,
    pub secret_expiry_soonest: Gauge<f64, AtomicU64>,
    pub secrets_past_renewal: Gauge,
    pub tls_certificate_expiry: Gauge<f64, AtomicU64>,
    pub resident_memory: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kubeecr");
        let m = Metrics {
            registry: Registry::default(),
            leader: Gauge::default(),
            secrets: Family::default(),
            refreshes: Family::default(),
            token_expiry: Family::default(),
            ecr_calls: Family::default(),
            admission_requests: Family::default(),
            admission_duration: Family::new_with_constructor(|| {
                // 0.25 ms to about 8 s.
                Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
            }),
            admission_tokens: Family::default(),
            watch_errors: Family::default(),
            lease_errors: Counter::default(),
            queue_depth: Gauge::default(),
            token_cache_keys: Gauge::default(),
            events_dropped: Counter::default(),
            events_unconfirmed: Counter::default(),
            http_refused: Family::default(),
            http_connections: Family::default(),
            secret_expiry_soonest: Gauge::default(),
            secrets_past_renewal: Gauge::default(),
            tls_certificate_expiry: Gauge::default(),
            resident_memory: Gauge::default(),
        };
        // No Secret and no certificate yet: nothing expires.
        m.secret_expiry_soonest.set(f64::INFINITY);
        m.tls_certificate_expiry.set(f64::INFINITY);
        // Series whose labels are known up front start at zero, so that a rate or an
        // increase over them has a start and a dashboard shows them before anything happens.
        for &outcome in RefreshOutcome::ALL {
            let _ = m.refreshes.get_or_create(&OutcomeLabels { outcome });
        }
        for &watch in Watch::ALL {
            let _ = m.watch_errors.get_or_create(&WatchLabels { watch });
        }
        for &server in Server::ALL {
            let _ = m.http_connections.get_or_create(&ServerLabels { server });
            for &reason in Refusal::ALL {
                let _ = m
                    .http_refused
                    .get_or_create(&RefusalLabels { server, reason });
            }
        }
        for &webhook in Webhook::ALL {
            let _ = m
                .admission_duration
                .get_or_create(&WebhookLabels { webhook });
        }
        for &client in Client::ALL {
            let _ = m
                .admission_tokens
                .get_or_create(&TokenResponseLabels { client });
        }
        registry.register(
            "build",
            "kubeecr's version",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        registry.register(
            "leader",
            "1 on the replica that holds the Lease and refreshes Secrets, else 0",
            m.leader.clone(),
        );
        registry.register("secrets", "Opted-in Secrets by state", m.secrets.clone());
        registry.register(
            "refreshes",
            "Refreshes of one Secret, by outcome",
            m.refreshes.clone(),
        );
        registry.register(
            "token_expiry_timestamp_seconds",
            "When the cached ECR token of each (principal, region) expires, in Unix seconds",
            m.token_expiry.clone(),
        );
        registry.register(
            "ecr_calls",
            "GetAuthorizationToken calls, by region and result",
            m.ecr_calls.clone(),
        );
        registry.register(
            "admission_requests",
            "AdmissionReviews answered, by webhook, operation and result",
            m.admission_requests.clone(),
        );
        registry.register(
            "admission_duration_seconds",
            "Time to answer an AdmissionReview",
            m.admission_duration.clone(),
        );
        registry.register(
            "admission_token_responses",
            "Admission responses that carried an ECR token, by whether the client was verified",
            m.admission_tokens.clone(),
        );
        registry.register(
            "watch_errors",
            "Errors of the Secret watches (each is retried with backoff)",
            m.watch_errors.clone(),
        );
        registry.register(
            "lease_errors",
            "Leader-election requests that failed (each is retried)",
            m.lease_errors.clone(),
        );
        registry.register(
            "refresh_queue_depth",
            "Secrets scheduled for a refresh, due or not",
            m.queue_depth.clone(),
        );
        registry.register(
            "token_cache_keys",
            "(principal, region) keys the token cache holds (1024 unless every one is in use)",
            m.token_cache_keys.clone(),
        );
        registry.register(
            "events_dropped",
            "Kubernetes Events not sent because too many were pending",
            m.events_dropped.clone(),
        );
        registry.register(
            "events_unconfirmed",
            "Events of a fill at admission not sent: the Secret was not stored as reviewed (refused after the webhook, a dry run, or a review that no API server sent)",
            m.events_unconfirmed.clone(),
        );
        registry.register(
            "http_refused",
            "Requests refused, connections closed early, or times accepting paused at the connection limit, by server and reason",
            m.http_refused.clone(),
        );
        registry.register(
            "http_connections",
            "Connections open, by server",
            m.http_connections.clone(),
        );
        registry.register(
            "secret_expiry_soonest_timestamp_seconds",
            "When the soonest-expiring token held by an opted-in Secret expires, in Unix seconds (+Inf with none)",
            m.secret_expiry_soonest.clone(),
        );
        registry.register(
            "secrets_past_renewal",
            "Opted-in Secrets whose token has less than half of --refresh-before left: kubeecr should have renewed them",
            m.secrets_past_renewal.clone(),
        );
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the webhook's serving certificate expires, in Unix seconds",
            m.tls_certificate_expiry.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the kubeecr process",
            m.resident_memory.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub fn set_states(&self, counts: impl IntoIterator<Item = (SecretState, i64)>) {
        for (state, count) in counts {
            self.secrets
                .get_or_create(&StateLabels { state })
                .set(count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_every_metric_with_the_kubeecr_prefix() {
        let m = Metrics::new();
        m.leader.set(1);
        m.set_states(SecretState::ALL.iter().map(|&s| (s, 0)));
        m.refreshes
            .get_or_create(&OutcomeLabels {
                outcome: RefreshOutcome::Refreshed,
            })
            .inc();
        let text = m.encode();
        for line in [
            "kubeecr_leader 1",
            "kubeecr_secrets{state=\"invalid\"} 0",
            "kubeecr_refreshes_total{outcome=\"refreshed\"} 1",
            "kubeecr_build_info{version=\"",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
