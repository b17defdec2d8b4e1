//! `kubeecr serve`: its flags, their checks, and the process they configure
//! (`runtime::run`).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Args};

use crate::cmd::args::RefresherArgs;
use crate::cmd::duration::{
    DAY, HALF_MINUTE, HOUR, MILLISECOND, SECOND, TEN_MINUTES, WEEK, ZERO, duration_within,
};
use crate::cmd::{CmdError, warn_of};
use crate::refresher::controller::ControllerSettings;
use crate::runtime::leader::Election;
use crate::runtime::serve::{ServeSettings, WebhookSettings};
use crate::servers::http::ServerSettings;
use crate::servers::limits::ServerLimits;
use crate::servers::limits::ServerTimeouts;
use crate::servers::tls::TlsFiles;

#[derive(Debug, Args)]
pub struct ServeCommand {
    #[command(flatten)]
    pub refresher: RefresherArgs,
    #[command(flatten)]
    pub webhook: WebhookArgs,
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(flatten)]
    pub leader: LeaderArgs,
}

#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// Address of the HTTPS webhook server.
    #[arg(long, env = "KUBEECR_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Serving certificate (PEM, may hold the chain), as cert-manager mounts it.
    #[arg(
        long,
        env = "KUBEECR_TLS_CERT_FILE",
        default_value = "/etc/kubeecr/tls/tls.crt"
    )]
    pub tls_cert_file: PathBuf,
    /// Serving key (PEM).
    #[arg(
        long,
        env = "KUBEECR_TLS_KEY_FILE",
        default_value = "/etc/kubeecr/tls/tls.key"
    )]
    pub tls_key_file: PathBuf,
    /// How often the certificate files are checked for a new pair.
    #[arg(long, env = "KUBEECR_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = |s: &str| duration_within(s, SECOND, HOUR))]
    pub tls_reload_interval: Duration,
    /// Deny an opted-in Secret write when no ECR token can be had (default: admit with a warning).
    #[arg(long, env = "KUBEECR_REQUIRE_TOKEN")]
    pub require_token: bool,
    /// Longest wait for a cold token during admission (also at most half the webhook timeout).
    #[arg(long, env = "KUBEECR_TOKEN_WAIT", default_value = "3s", value_parser = |s: &str| duration_within(s, MILLISECOND, HALF_MINUTE))]
    pub token_wait: Duration,
    /// Largest AdmissionReview accepted; larger ones get 413, before the body is read when
    /// its Content-Length says so.
    #[arg(long, env = "KUBEECR_MAX_REQUEST_BYTES", default_value_t = ServerLimits::WEBHOOK.max_request_bytes, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_request_bytes: u32,
    /// Request body bytes held in memory at once across all webhook requests (taken as the
    /// bytes arrive); a request that would pass it gets 503.
    #[arg(long, env = "KUBEECR_MAX_BUFFERED_REQUEST_BYTES", default_value_t = ServerLimits::WEBHOOK.max_buffered_request_bytes, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_buffered_request_bytes: u32,
    /// Webhook connections open at once; more wait in the listen backlog until one closes.
    #[arg(long, env = "KUBEECR_MAX_CONNECTIONS", default_value_t = ServerLimits::WEBHOOK.max_connections as u32, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_connections: u32,
    /// Webhook connections open at once from one IP address that have not authenticated with
    /// a client certificate (--client-ca-file); more are closed at once. The API server's
    /// HTTP/2 connections stay far below it; raise it only if yours calls webhooks over
    /// HTTP/1.1 without a client certificate. 0: no limit.
    #[arg(long, env = "KUBEECR_MAX_CONNECTIONS_PER_IP", default_value_t = ServerLimits::WEBHOOK.max_connections_per_ip as u32, value_parser = clap::value_parser!(u32).range(0..=65536))]
    pub max_connections_per_ip: u32,
    /// Webhook requests in flight at once, their body reads included; more get 503.
    #[arg(long, env = "KUBEECR_MAX_CONCURRENT_REQUESTS", default_value_t = ServerLimits::WEBHOOK.max_concurrent_requests as u32, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_concurrent_requests: u32,
    /// HTTP/2 streams at once on one webhook connection.
    #[arg(long, env = "KUBEECR_HTTP2_MAX_CONCURRENT_STREAMS", default_value_t = ServerLimits::WEBHOOK.http2_max_concurrent_streams, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub http2_max_concurrent_streams: u32,
    /// Largest request header block (HTTP/2 header list, HTTP/1 request head); larger gets 431.
    #[arg(long, env = "KUBEECR_MAX_HEADER_BYTES", default_value_t = ServerLimits::WEBHOOK.max_header_bytes, value_parser = clap::value_parser!(u32).range(8192..=1024 * 1024))]
    pub max_header_bytes: u32,
    /// A webhook request's whole body must arrive within this, else 408 (and over HTTP/1.1
    /// the connection is closed).
    #[arg(long, env = "KUBEECR_REQUEST_BODY_TIMEOUT", default_value = "10s", value_parser = |s: &str| duration_within(s, MILLISECOND, TEN_MINUTES))]
    pub request_body_timeout: Duration,
    /// A webhook request not answered within this, its body included, gets 503 (the API
    /// server waits 30s at most). At least --request-body-timeout.
    #[arg(long, env = "KUBEECR_REQUEST_TIMEOUT", default_value = "30s", value_parser = |s: &str| duration_within(s, MILLISECOND, TEN_MINUTES))]
    pub request_timeout: Duration,
    /// Put a fresh token in the mutating webhook's response. `false`: the response only adds
    /// the `{"auths":{}}` placeholder and the managed label, and the refresher fills the
    /// Secret about a second later, so no token ever leaves through the webhook port.
    #[arg(long, env = "KUBEECR_ADMISSION_FILL", default_value_t = true, action = ArgAction::Set)]
    pub admission_fill: bool,
    /// Require a client certificate chaining to this CA (PEM) on the webhook port, as the API
    /// server presents with an AdmissionConfiguration; re-read like the serving certificate.
    #[arg(long, env = "KUBEECR_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
}

impl WebhookArgs {
    pub fn settings(&self) -> Result<WebhookSettings, String> {
        if self.request_body_timeout > self.request_timeout {
            return Err(format!(
                "--request-body-timeout ({}) must not exceed --request-timeout ({})",
                humantime::format_duration(self.request_body_timeout),
                humantime::format_duration(self.request_timeout)
            ));
        }
        if self.max_buffered_request_bytes < self.max_request_bytes {
            return Err(format!(
                "--max-buffered-request-bytes ({}) must be at least --max-request-bytes ({}), or no review of the largest size is ever read",
                self.max_buffered_request_bytes, self.max_request_bytes
            ));
        }
        Ok(WebhookSettings {
            listen: self.listen,
            tls: TlsFiles {
                cert: self.tls_cert_file.clone(),
                key: self.tls_key_file.clone(),
                client_ca: self.client_ca_file.clone(),
            },
            tls_reload_interval: self.tls_reload_interval,
            require_token: self.require_token,
            token_wait: self.token_wait,
            server: ServerSettings {
                timeouts: ServerTimeouts {
                    body: self.request_body_timeout,
                    request: self.request_timeout,
                    ..ServerTimeouts::WEBHOOK
                },
                limits: ServerLimits {
                    max_connections: self.max_connections as usize,
                    max_connections_per_ip: self.max_connections_per_ip as usize,
                    max_concurrent_requests: self.max_concurrent_requests as usize,
                    max_request_bytes: self.max_request_bytes,
                    max_buffered_request_bytes: self.max_buffered_request_bytes,
                    http2_max_concurrent_streams: self.http2_max_concurrent_streams,
                    max_header_bytes: self.max_header_bytes,
                },
                ..ServerSettings::WEBHOOK
            },
            admission_fill: self.admission_fill,
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// Address of the plain-HTTP admin server: /livez, /readyz, /metrics.
    #[arg(long, env = "KUBEECR_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    pub admin_listen: SocketAddr,
    /// Every opted-in Secret is decided on again this often, whatever the watches say (a safety net).
    #[arg(long, env = "KUBEECR_RESYNC_INTERVAL", default_value = "1h", value_parser = |s: &str| duration_within(s, SECOND, WEEK))]
    pub resync_interval: Duration,
    /// Longest wait between retries of a Secret whose refresh keeps failing (backoff doubles from 1s).
    #[arg(long, env = "KUBEECR_MAX_BACKOFF", default_value = "5m", value_parser = |s: &str| duration_within(s, SECOND, DAY))]
    pub max_backoff: Duration,
    /// After SIGTERM, keep serving this long with /readyz at 503, so that the Service's endpoints drop this pod before it stops accepting.
    #[arg(long, env = "KUBEECR_SHUTDOWN_DELAY", default_value = "0s", value_parser = |s: &str| duration_within(s, ZERO, TEN_MINUTES))]
    pub shutdown_delay: Duration,
    /// Kubernetes Events sent per second at most; more wait, and past 1024 waiting are dropped.
    #[arg(long, env = "KUBEECR_EVENTS_PER_SECOND", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub events_per_second: u32,
}

#[derive(Debug, Clone, Args)]
pub struct LeaderArgs {
    /// Elect one replica with a Lease to refresh Secrets (every replica serves the webhook). `--leader-elect=false` for a single instance.
    #[arg(long, env = "KUBEECR_LEADER_ELECT", default_value_t = true, action = ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, env = "KUBEECR_LEASE_NAME", default_value = "kubeecr")]
    pub lease_name: String,
    /// Namespace of the Lease. Unset: the in-cluster namespace, else the kubeconfig context's.
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease. Unset: the hostname and a random suffix.
    #[arg(long, env = "POD_NAME")]
    pub lease_identity: Option<String>,
    /// How long a Lease holds after its last renewal.
    #[arg(long, env = "KUBEECR_LEASE_DURATION", default_value = "15s", value_parser = |s: &str| duration_within(s, MILLISECOND, TEN_MINUTES))]
    pub lease_duration: Duration,
    /// A leader that could not renew for this long stops leading (shorter than --lease-duration).
    #[arg(long, env = "KUBEECR_LEASE_RENEW_DEADLINE", default_value = "10s", value_parser = |s: &str| duration_within(s, MILLISECOND, TEN_MINUTES))]
    pub lease_renew_deadline: Duration,
    /// How often the Lease is renewed, or tried for.
    #[arg(long, env = "KUBEECR_LEASE_RETRY_PERIOD", default_value = "2s", value_parser = |s: &str| duration_within(s, MILLISECOND, TEN_MINUTES))]
    pub lease_retry_period: Duration,
}

impl LeaderArgs {
    pub fn election(&self) -> Result<Option<Election>, String> {
        if !self.leader_elect {
            return Ok(None);
        }
        if self.lease_renew_deadline >= self.lease_duration
            || self.lease_retry_period >= self.lease_renew_deadline
        {
            return Err(format!(
                "--lease-retry-period ({}) < --lease-renew-deadline ({}) < --lease-duration ({}) must hold, e.g. 2s < 10s < 15s",
                humantime::format_duration(self.lease_retry_period),
                humantime::format_duration(self.lease_renew_deadline),
                humantime::format_duration(self.lease_duration)
            ));
        }
        Ok(Some(Election {
            name: self.lease_name.clone(),
            namespace: self.lease_namespace.clone().filter(|n| !n.is_empty()),
            identity: self.lease_identity.clone().filter(|n| !n.is_empty()),
            lease_duration: self.lease_duration,
            renew_deadline: self.lease_renew_deadline,
            retry_period: self.lease_retry_period,
        }))
    }
}

/// The first Backoff step of a failing Secret.
const MIN_BACKOFF: Duration = Duration::from_secs(1);

impl ServeCommand {
    pub fn settings(&self) -> Result<ServeSettings, String> {
        let RefresherArgs {
            kube,
            aws,
            policy,
            refresh,
        } = &self.refresher;
        Ok(ServeSettings {
            kube: kube.clone(),
            ecr: aws.settings(),
            cache: refresh.cache_config(aws),
            policy: policy.policy()?,
            write: refresh.write_settings(false, false),
            page_size: refresh.page_size,
            controller: ControllerSettings {
                concurrency: usize::from(refresh.concurrency),
                resync: self.service.resync_interval.max(Duration::from_secs(1)),
                min_backoff: MIN_BACKOFF,
                max_backoff: self.service.max_backoff.max(MIN_BACKOFF),
            },
            webhook: self.webhook.settings()?,
            admin_listen: self.service.admin_listen,
            election: self.leader.election()?,
            events_per_second: NonZeroU32::new(self.service.events_per_second)
                .unwrap_or(NonZeroU32::MIN),
            shutdown_delay: self.service.shutdown_delay,
        })
    }
}

impl ServeCommand {
    pub async fn run(self) -> Result<ExitCode, CmdError> {
        let settings = self.settings().map_err(CmdError::NotRun)?;
        warn_of(&settings.policy);
        if let Some(warning) = settings.admission_warning() {
            tracing::warn!("{warning}");
        }
        Ok(crate::runtime::serve::run(settings).await?)
    }
}
