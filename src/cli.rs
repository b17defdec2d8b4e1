//! Command-line interface: every clap struct, and how each becomes the plain settings the
//! rest of kubeecr takes. Flags that configure a running kubeecr also read a `KUBEECR_*`
//! variable; a command's one-off flags (`refresh --dry-run`, `status -o`, `certs`') read none.
//! docs/reference/cli.md, generated from these definitions, says which is which.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::certs::CertsRequest;
use crate::contract::partition::Regions;
use crate::contract::policy::{
    NamespaceRules, NamespaceSet, OWN_IDENTITY_FLAG, Policy, REGISTRY_FLAG, ROLE_FLAG,
    is_namespace_name,
};
use crate::contract::secret_update::DuePolicy;
use crate::kube_api::KubeSettings;
use crate::refresher::controller::ControllerSettings;
use crate::refresher::pass::PassSettings;
use crate::refresher::write::{WriteRate, WriteSettings};
use crate::servers::http::{ServerSettings, ServerTimeouts};
use crate::servers::limits::ServerLimits;
use crate::servers::tls::TlsFiles;
use crate::service::leader::Election;
use crate::service::serve::{ServeSettings, WebhookSettings};
use crate::status::StatusSettings;
use crate::telemetry::logging::{LogFormat, LogSettings};
use crate::tokens::cache::CacheConfig;
use crate::tokens::ecr::EcrSettings;

#[derive(Debug, Parser)]
#[command(
    name = "kubeecr",
    version,
    about = "Keeps AWS ECR pull credentials fresh in Kubernetes dockerconfigjson Secrets, in place."
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where AWS credentials come from; the variables are the SDK's, read by no flag.
const AWS_CREDENTIALS_HELP: &str = "AWS credentials come from the AWS SDK's default chain: \
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN (in a cluster, from the \
kubeecr-aws-secrets Secret), IRSA (AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE), EKS Pod Identity, \
or AWS_PROFILE.";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Refresh every opted-in Secret that is due, once, and exit (CronJob or laptop).
    #[command(after_help = AWS_CREDENTIALS_HELP)]
    Refresh(Box<RefreshCommand>),
    /// Serve the admission webhook and the admin port, and keep opted-in Secrets fresh.
    #[command(after_help = AWS_CREDENTIALS_HELP)]
    Serve(Box<ServeCommand>),
    /// List opted-in Secrets with their expiry and state; exit 1 when any needs attention.
    Status(Box<StatusCommand>),
    /// Write a CA and a serving certificate for the webhook (clusters without cert-manager).
    Certs(CertsCommand),
}

#[derive(Debug, Args)]
pub struct RefreshCommand {
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub aws: AwsArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub refresh: RefreshArgs,
    /// Write every opted-in secret, due or not (one whose content would not change is still left alone).
    #[arg(long, env = "KUBEECR_FORCE")]
    pub force: bool,
    /// Say what would be written, and write nothing: each write goes to the API server with
    /// dryRun=All, so RBAC, validation and webhooks are checked too. ECR is still called.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct StatusCommand {
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// A Secret whose token expires within this margin is `due` (as for refresh and serve).
    #[arg(long, env = "KUBEECR_REFRESH_BEFORE", default_value = "4h", value_parser = parse_refresh_before)]
    pub refresh_before: Duration,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: OutputFormat,
}

impl StatusCommand {
    pub fn settings(&self) -> Result<StatusSettings, String> {
        Ok(StatusSettings {
            policy: std::sync::Arc::new(self.policy.policy()?),
            refresh_before: self.refresh_before,
            page_size: 500,
        })
    }
}

#[derive(Debug, Args)]
pub struct CertsCommand {
    /// Directory for ca.crt, tls.crt, tls.key and ca-bundle.env (what certs/kustomization.yaml
    /// reads). Required, so that a key never lands in whatever directory the command ran in.
    #[arg(long)]
    pub out: PathBuf,
    /// Name of the webhook's Service.
    #[arg(long, default_value = "kubeecr-webhook")]
    pub service: String,
    /// Namespace of the webhook's Service.
    #[arg(long, default_value = "kubeecr")]
    pub service_namespace: String,
    /// More DNS names or IP addresses to cover (e.g. 127.0.0.1 for a local run).
    #[arg(long = "extra-name", value_delimiter = ',')]
    pub extra_names: Vec<String>,
    /// How long the certificates are valid; run again before then.
    #[arg(long, default_value = "365d", value_parser = |s: &str| duration_within(s, HOUR, TEN_YEARS))]
    pub valid_for: Duration,
    /// Replace certificates already in --out.
    #[arg(long)]
    pub force: bool,
}

impl CertsCommand {
    pub fn request(&self) -> CertsRequest {
        CertsRequest {
            service: self.service.clone(),
            namespace: self.service_namespace.clone(),
            extra_names: self.extra_names.clone(),
            valid_for: self.valid_for,
        }
    }
}

#[derive(Debug, Args)]
pub struct ServeCommand {
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub aws: AwsArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub refresh: RefreshArgs,
    #[command(flatten)]
    pub webhook: WebhookArgs,
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(flatten)]
    pub leader: LeaderArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Plain,
    Json,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(
        long,
        env = "KUBEECR_LOG_FORMAT",
        value_enum,
        default_value = "plain",
        global = true
    )]
    pub log_format: LogFormatArg,
    /// Log filter, in tracing's EnvFilter syntax (e.g. `info,kubeecr=debug`). Unset:
    /// $RUST_LOG, then `info`. Whatever it says, the AWS SDK, hyper, h2, rustls, tower and
    /// kube's client never log below debug: at trace they would log the token.
    #[arg(long, env = "KUBEECR_LOG_LEVEL", global = true)]
    pub log_level: Option<String>,
}

impl LogArgs {
    pub fn settings(&self) -> LogSettings {
        let (filter, source) = match (&self.log_level, std::env::var("RUST_LOG")) {
            (Some(level), _) => (level.clone(), "--log-level"),
            (None, Ok(rust_log)) if !rust_log.is_empty() => (rust_log, "RUST_LOG"),
            (None, _) => ("info".to_string(), "the default log level"),
        };
        LogSettings {
            format: match self.log_format {
                LogFormatArg::Plain => LogFormat::Plain,
                LogFormatArg::Json => LogFormat::Json,
            },
            filter,
            source,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct KubeArgs {
    /// Kubeconfig file. Unset: $KUBECONFIG, ~/.kube/config, then the in-cluster service account.
    #[arg(long, env = "KUBEECR_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context. Unset: the current context.
    #[arg(long, env = "KUBEECR_CONTEXT")]
    pub context: Option<String>,
}

impl KubeArgs {
    pub fn settings(&self) -> KubeSettings {
        KubeSettings {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct AwsArgs {
    /// ECR endpoint URL (VPC endpoint, emulator). Unset: AWS_ENDPOINT_URL_ECR, AWS_ENDPOINT_URL, then the regional endpoint.
    #[arg(long, env = "KUBEECR_ECR_ENDPOINT")]
    pub ecr_endpoint: Option<String>,
    /// STS endpoint URL for AssumeRole. Unset: AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL, then the regional endpoint.
    #[arg(long, env = "KUBEECR_STS_ENDPOINT")]
    pub sts_endpoint: Option<String>,
    /// Bound on one AWS call, retries included.
    #[arg(long, env = "KUBEECR_AWS_TIMEOUT", default_value = "20s", value_parser = |s: &str| duration_within(s, SECOND, FIVE_MINUTES))]
    pub aws_timeout: Duration,
    /// GetAuthorizationToken calls in flight at most, across every (principal, region).
    #[arg(long, env = "KUBEECR_MAX_CONCURRENT_FETCHES", default_value_t = CacheConfig::DEFAULT_MAX_CONCURRENT_FETCHES, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u16).range(1..=256), usize::from))]
    pub max_concurrent_fetches: usize,
    /// At most one GetAuthorizationToken call per (principal, region) in this interval; after
    /// failures in a row, up to 5 times longer (15m at most).
    #[arg(long, env = "KUBEECR_MIN_FETCH_INTERVAL", default_value = "1m", value_parser = |s: &str| duration_within(s, SECOND, HOUR))]
    pub min_fetch_interval: Duration,
}

impl AwsArgs {
    pub fn settings(&self) -> EcrSettings {
        EcrSettings {
            ecr_endpoint: self.ecr_endpoint.clone(),
            sts_endpoint: self.sts_endpoint.clone(),
            call_timeout: self.aws_timeout,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// IAM roles that Secrets may name in deft.com/kubeecr-role, per namespace:
    /// `team-a=arn:aws:iam::111122223333:role/ecr-team-a-*`, or `*=<pattern>` for every
    /// namespace. `*` and `?` never match `/`. Default: none.
    #[arg(long, env = "KUBEECR_ALLOWED_ROLE_ARNS", value_delimiter = ',')]
    pub allowed_role_arns: Option<Vec<String>>,
    /// Registries that Secrets may name, per namespace, as `account/region` patterns:
    /// `team-a=111111111111/*`, or `*=<pattern>` for every namespace. Default: every registry
    /// in every namespace; once any is set, a namespace no rule names may name none.
    #[arg(long, env = "KUBEECR_ALLOWED_REGISTRIES", value_delimiter = ',')]
    pub allowed_registries: Option<Vec<String>>,
    /// Namespaces whose Secrets may be served with kubeecr's own AWS identity, i.e. without
    /// deft.com/kubeecr-role: namespace names, `*` (every namespace, the default) or `none`.
    /// Elsewhere a Secret must name a role that --allowed-role-arns allows there.
    #[arg(long, env = "KUBEECR_OWN_IDENTITY_NAMESPACES", value_delimiter = ',')]
    pub own_identity_namespaces: Option<Vec<String>>,
    /// Namespaces to serve. Default: all.
    #[arg(
        long,
        visible_alias = "namespace",
        short = 'n',
        env = "KUBEECR_NAMESPACES",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,
    /// Namespaces never served.
    #[arg(long, env = "KUBEECR_EXCLUDE_NAMESPACES", value_delimiter = ',')]
    pub exclude_namespaces: Vec<String>,
    /// Regions to accept beyond those the AWS SDK in this build lists (a region AWS opened
    /// after this release), e.g. `xx-newregion-1`. Others are refused before any ECR call.
    #[arg(long, env = "KUBEECR_EXTRA_REGIONS", value_delimiter = ',')]
    pub extra_regions: Vec<String>,
}

impl PolicyArgs {
    /// The policy, or what is wrong with a pattern.
    pub fn policy(&self) -> Result<Policy, String> {
        let names = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let (namespaces, exclude) = (names(&self.namespaces), names(&self.exclude_namespaces));
        // They end up in field selectors and in messages: only real namespace names.
        for (flag, list) in [
            ("--namespaces", &namespaces),
            ("--exclude-namespaces", &exclude),
        ] {
            if let Some(bad) = list.iter().find(|n| !is_namespace_name(n)) {
                return Err(format!(
                    "{flag} {bad:?} is not a namespace name (lowercase letters, digits and -, at most 63), e.g. team-a"
                ));
            }
        }
        if !namespaces.is_empty() && namespaces.iter().all(|n| exclude.contains(n)) {
            return Err(format!(
                "--exclude-namespaces excludes every namespace of --namespaces ({}), so nothing would be served",
                namespaces.join(",")
            ));
        }
        Ok(Policy {
            allowed_role_arns: NamespaceRules::parse(
                ROLE_FLAG,
                given(ROLE_FLAG.name, &self.allowed_role_arns)?,
            )?,
            allowed_registries: NamespaceRules::parse(
                REGISTRY_FLAG,
                given(REGISTRY_FLAG.name, &self.allowed_registries)?,
            )?,
            own_identity: NamespaceSet::parse(
                OWN_IDENTITY_FLAG,
                given(OWN_IDENTITY_FLAG, &self.own_identity_namespaces)?,
            )?,
            namespaces,
            exclude_namespaces: exclude,
            regions: Regions::with_extra(&self.extra_regions)
                .map_err(|e| format!("--extra-regions {e}"))?,
        })
    }
}

/// A rule flag's values; given but empty (`--allowed-registries=`, a template that rendered
/// nothing) is refused, since it would otherwise mean the most permissive default.
fn given<'a>(flag: &str, values: &'a Option<Vec<String>>) -> Result<&'a [String], String> {
    match values {
        None => Ok(&[]),
        Some(v) if v.iter().all(|s| s.trim().is_empty()) => Err(format!(
            "{flag} is given but empty; leave it out for the default, or list what it allows"
        )),
        Some(v) => Ok(v),
    }
}

/// Tokens live 12h; the longest margin that still leaves a fresh token room to be written.
const MAX_REFRESH_BEFORE: Duration = Duration::from_secs(10 * 3600);
/// A token served by the cache outlives `refresh_before` by at least this much, so a freshly
/// written secret is not due again at once.
const CACHE_HEADROOM: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Args)]
pub struct RefreshArgs {
    /// Refresh a secret when its token expires within this margin (tokens live 12h).
    #[arg(long, env = "KUBEECR_REFRESH_BEFORE", default_value = "4h", value_parser = parse_refresh_before)]
    pub refresh_before: Duration,
    /// Secrets processed at once.
    #[arg(long, env = "KUBEECR_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Secrets per list page.
    #[arg(long, env = "KUBEECR_PAGE_SIZE", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub page_size: u32,
    /// Client-side limit on writes to the API server, per second; 0 lifts it.
    #[arg(long, env = "KUBEECR_WRITE_QPS", default_value_t = 500)]
    pub write_qps: u32,
    /// Writes allowed at once above --write-qps.
    #[arg(long, env = "KUBEECR_WRITE_BURST", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub write_burst: u32,
}

const ZERO: Duration = Duration::ZERO;
const MILLISECOND: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const HALF_MINUTE: Duration = Duration::from_secs(30);
const FIVE_MINUTES: Duration = Duration::from_secs(5 * 60);
const TEN_MINUTES: Duration = Duration::from_secs(10 * 60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
const TEN_YEARS: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A duration flag, refused at parse time outside `min..=max`: a zero interval panics a
/// timer, and a huge one overflows a timestamp.
fn duration_within(s: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e}; use e.g. 30s, 5m or 1h"))?;
    if d < min || d > max {
        let range = |d: Duration| humantime::format_duration(d).to_string();
        return Err(if min.is_zero() {
            format!("{s} is too long; use at most {}", range(max))
        } else {
            format!(
                "{s} is out of range; use from {} to {}",
                range(min),
                range(max)
            )
        });
    }
    Ok(d)
}

fn parse_refresh_before(s: &str) -> Result<Duration, String> {
    let d = duration_within(s, ZERO, TEN_YEARS)?;
    if d > MAX_REFRESH_BEFORE {
        return Err(format!(
            "{s} is too long: ECR tokens live 12h, so use at most {}, e.g. 4h",
            humantime::format_duration(MAX_REFRESH_BEFORE)
        ));
    }
    Ok(d)
}

impl RefreshArgs {
    pub fn write_settings(&self, force: bool, dry_run: bool) -> WriteSettings {
        WriteSettings {
            dry_run,
            due: DuePolicy {
                refresh_before: self.refresh_before,
                force,
            },
            conflict_retries: 5,
            deadline: crate::refresher::write::REFRESH_DEADLINE,
            rate: NonZeroU32::new(self.write_qps).map(|per_second| WriteRate {
                per_second,
                burst: NonZeroU32::new(self.write_burst).unwrap_or(NonZeroU32::MIN),
            }),
        }
    }

    pub fn pass_settings(&self) -> PassSettings {
        PassSettings {
            concurrency: usize::from(self.concurrency),
            page_size: self.page_size,
        }
    }

    pub fn cache_config(&self, aws: &AwsArgs) -> CacheConfig {
        CacheConfig {
            max_concurrent_fetches: aws.max_concurrent_fetches,
            ..CacheConfig::new(self.refresh_before + CACHE_HEADROOM, aws.min_fetch_interval)
        }
    }
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
        Ok(ServeSettings {
            kube: self.kube.settings(),
            ecr: self.aws.settings(),
            cache: self.refresh.cache_config(&self.aws),
            policy: self.policy.policy()?,
            write: self.refresh.write_settings(false, false),
            page_size: self.refresh.page_size,
            controller: ControllerSettings {
                concurrency: usize::from(self.refresh.concurrency),
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn refresh_before_is_bounded() {
        assert!(parse_refresh_before("4h").is_ok());
        let msg = parse_refresh_before("11h").unwrap_err();
        assert!(msg.contains("at most 10h"), "{msg}");
    }

    #[test]
    fn durations_are_checked_when_parsed() {
        for (flag, bad, expected) in [
            (
                "--tls-reload-interval",
                "0s",
                "out of range; use from 1s to 1h",
            ),
            ("--min-fetch-interval", "20000years", "out of range"),
            ("--resync-interval", "10years", "out of range"),
            ("--shutdown-delay", "1y", "too long; use at most 10m"),
            ("--token-wait", "soon", "use e.g. 30s"),
        ] {
            let err = Cli::try_parse_from(["kubeecr", "serve", flag, bad]).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains(flag) && msg.contains(expected),
                "{flag} {bad}: {msg}"
            );
        }
        assert!(serve(&["--tls-reload-interval", "1s", "--shutdown-delay", "0s"]).is_ok());
        let err = Cli::try_parse_from([
            "kubeecr",
            "certs",
            "--out",
            "x",
            "--valid-for",
            "20000years",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
    }

    #[test]
    fn namespaces_must_be_namespace_names() {
        let e = serve(&["--exclude-namespaces", "kube-system,a=b"])
            .err()
            .unwrap();
        assert!(
            e.starts_with("--exclude-namespaces \"a=b\" is not a namespace name"),
            "{e}"
        );
        let e = serve(&["--namespaces", "Team"]).err().unwrap();
        assert!(e.starts_with("--namespaces \"Team\""), "{e}");
        let e = serve(&["--namespaces", "a", "--exclude-namespaces", "a"])
            .err()
            .unwrap();
        assert!(e.contains("so nothing would be served"), "{e}");
        assert!(serve(&["--namespaces", "a,b", "--exclude-namespaces", "a"]).is_ok());
    }

    #[test]
    fn lists_are_comma_separated() {
        let cli = Cli::try_parse_from([
            "kubeecr",
            "refresh",
            "--namespace",
            "a,b",
            "--allowed-role-arns",
            "*=arn:aws:iam::123456789012:role/x*,team-a=arn:aws:iam::123456789012:role/y",
        ])
        .unwrap();
        let Command::Refresh(cmd) = cli.command else {
            panic!("parsed as refresh")
        };
        let policy = cmd.policy.policy().unwrap();
        assert_eq!(policy.namespaces, ["a", "b"]);
        assert!(
            policy
                .allowed_role_arns
                .allows("b", "arn:aws:iam::123456789012:role/xyz")
        );
        assert!(
            policy
                .allowed_role_arns
                .allows("team-a", "arn:aws:iam::123456789012:role/y")
        );
        assert!(
            !policy
                .allowed_role_arns
                .allows("b", "arn:aws:iam::123456789012:role/y")
        );
    }

    fn serve(args: &[&str]) -> Result<ServeSettings, String> {
        let cli = Cli::try_parse_from(["kubeecr", "serve"].iter().chain(args)).unwrap();
        let Command::Serve(cmd) = cli.command else {
            panic!("parsed as serve")
        };
        cmd.settings()
    }

    #[test]
    fn leader_election_is_on_unless_turned_off() {
        assert!(serve(&[]).unwrap().election.is_some());
        assert!(serve(&["--leader-elect=false"]).unwrap().election.is_none());
        let e = serve(&["--lease-duration", "5s"]).err().unwrap();
        assert!(e.contains("must hold"), "{e}");
    }

    #[test]
    fn zero_write_qps_lifts_the_limit() {
        assert!(serve(&["--write-qps", "0"]).unwrap().write.rate.is_none());
        let rate = serve(&["--write-qps", "5", "--write-burst", "7"])
            .unwrap()
            .write
            .rate
            .unwrap();
        assert_eq!((rate.per_second.get(), rate.burst.get()), (5, 7));
    }

    #[test]
    fn a_role_pattern_must_name_its_namespace() {
        let e = serve(&[
            "--allowed-role-arns",
            "arn:aws:iam::123456789012:role/ecr-*",
        ])
        .err()
        .unwrap();
        assert!(
            e.contains("team-a=arn:aws:iam::123456789012:role/ecr-*"),
            "{e}"
        );
        assert!(serve(&["--allowed-role-arns", "*=arn:aws:iam::1:role/x"]).is_ok());
        let e = serve(&["--allowed-registries", "team-a=12[/x"])
            .err()
            .unwrap();
        assert!(
            e.starts_with("--allowed-registries \"team-a=12[/x\""),
            "{e}"
        );
        let e = serve(&["--allowed-registries", "123456789012/*"])
            .err()
            .unwrap();
        assert!(
            e.contains("(*=123456789012/* would allow it in every namespace)"),
            "{e}"
        );
        let policy = serve(&[
            "--allowed-registries",
            "team-a=111111111111/*,*=*/eu-west-1",
            "--own-identity-namespaces",
            "team-a",
        ])
        .unwrap()
        .policy;
        assert!(
            policy
                .allowed_registries
                .allows("team-a", "111111111111/us-west-2")
        );
        assert!(
            !policy
                .allowed_registries
                .allows("team-b", "111111111111/us-west-2")
        );
        assert!(
            policy
                .allowed_registries
                .allows("team-b", "111111111111/eu-west-1")
        );
        assert_eq!(
            policy.own_identity,
            NamespaceSet::Only(vec!["team-a".into()])
        );
        assert_eq!(serve(&[]).unwrap().policy.own_identity, NamespaceSet::All);
        // Given but empty would mean the most permissive default: refused.
        for empty in [
            "--allowed-registries=",
            "--own-identity-namespaces= ,",
            "--allowed-role-arns=",
        ] {
            let e = serve(&[empty]).err().unwrap();
            assert!(e.contains("is given but empty"), "{empty}: {e}");
        }
    }

    #[test]
    fn server_bounds_default_to_the_webhook_constants() {
        assert_eq!(serve(&[]).unwrap().webhook.server, ServerSettings::WEBHOOK);
        let server = serve(&[
            "--max-connections=4",
            "--max-concurrent-requests=3",
            "--max-request-bytes=1000",
            "--max-buffered-request-bytes=5000",
            "--http2-max-concurrent-streams=2",
            "--max-header-bytes=9000",
            "--request-body-timeout=2s",
            "--request-timeout=5s",
        ])
        .unwrap()
        .webhook
        .server;
        assert_eq!(
            server.limits,
            ServerLimits {
                max_connections: 4,
                max_connections_per_ip: 32,
                max_concurrent_requests: 3,
                max_request_bytes: 1000,
                max_buffered_request_bytes: 5000,
                http2_max_concurrent_streams: 2,
                max_header_bytes: 9000,
            }
        );
        assert_eq!(
            (server.timeouts.body, server.timeouts.request),
            (Duration::from_secs(2), Duration::from_secs(5))
        );
        assert_eq!(server.timeouts.idle, ServerTimeouts::WEBHOOK.idle);
    }

    #[test]
    fn server_bounds_are_checked_when_parsed() {
        for zero in [
            "--max-connections=0",
            "--max-concurrent-requests=0",
            "--max-request-bytes=0",
            "--max-buffered-request-bytes=0",
            "--http2-max-concurrent-streams=0",
            "--max-header-bytes=100",
            "--request-body-timeout=0s",
            "--request-timeout=0s",
        ] {
            assert!(
                Cli::try_parse_from(["kubeecr", "serve", zero]).is_err(),
                "{zero}"
            );
        }
        let e = serve(&["--request-body-timeout=40s"]).err().unwrap();
        assert!(e.contains("must not exceed --request-timeout"), "{e}");
        let e = serve(&["--max-buffered-request-bytes=1024"]).err().unwrap();
        assert!(e.contains("at least --max-request-bytes"), "{e}");
    }

    #[test]
    fn admission_fill_and_client_ca_are_settings() {
        let settings = serve(&["--admission-fill=false", "--client-ca-file", "/ca.crt"]).unwrap();
        assert!(!settings.webhook.admission_fill);
        assert_eq!(
            settings.webhook.tls.client_ca.as_deref(),
            Some(std::path::Path::new("/ca.crt"))
        );
        let defaults = serve(&[]).unwrap();
        assert!(
            defaults.webhook.admission_fill,
            "the design fills at admission by default"
        );
        assert!(defaults.webhook.tls.client_ca.is_none());
    }

    #[test]
    fn per_namespace_rules_with_tokens_at_admission_are_warned_of() {
        let rules = "--allowed-registries=team-a=111111111111/*";
        let warning = serve(&[rules])
            .unwrap()
            .admission_warning()
            .expect("warned");
        assert!(warning.contains("--admission-fill=false"), "{warning}");
        assert!(warning.len() <= 256, "{}", warning.len());
        for safe in [
            vec![rules, "--admission-fill=false"],
            vec![rules, "--client-ca-file", "/ca.crt"],
            vec!["--allowed-registries=*=111111111111/*"],
            vec![],
        ] {
            assert_eq!(serve(&safe).unwrap().admission_warning(), None, "{safe:?}");
        }
    }
}
