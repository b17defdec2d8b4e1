//! Command-line interface. Every flag can also be set through a `KUBEECR_*` variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::ecr::EcrSettings;
use crate::policy::{Patterns, Policy};
use crate::refresh::RefreshOptions;
use crate::secret_update::DuePolicy;
use crate::token_cache::CacheConfig;

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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Refresh every opted-in Secret that is due, once, and exit (CronJob or laptop).
    Refresh(Box<RefreshCommand>),
    /// Serve the admission webhook over HTTPS and refresh opted-in Secrets in the background.
    Serve(Box<crate::serve::ServeCommand>),
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
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
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
    pub log_format: LogFormat,
    /// Log filter, in tracing's EnvFilter syntax (e.g. `info,kubeecr=debug`).
    #[arg(long, env = "KUBEECR_LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,
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

#[derive(Debug, Clone, Args)]
pub struct AwsArgs {
    /// ECR endpoint URL (VPC endpoint, emulator). Unset: AWS_ENDPOINT_URL_ECR, AWS_ENDPOINT_URL, then the regional endpoint.
    #[arg(long, env = "KUBEECR_ECR_ENDPOINT")]
    pub ecr_endpoint: Option<String>,
    /// STS endpoint URL for AssumeRole. Unset: AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL, then the regional endpoint.
    #[arg(long, env = "KUBEECR_STS_ENDPOINT")]
    pub sts_endpoint: Option<String>,
    /// Bound on one AWS call, retries included.
    #[arg(long, env = "KUBEECR_AWS_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub aws_timeout: Duration,
    /// At most one GetAuthorizationToken call per (principal, region) in this interval.
    #[arg(long, env = "KUBEECR_MIN_FETCH_INTERVAL", default_value = "1m", value_parser = humantime::parse_duration)]
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
    /// IAM role ARN patterns (`*`, `?`) that secrets may name in deft.com/kubeecr-role. Default: none.
    #[arg(long, env = "KUBEECR_ALLOWED_ROLE_ARNS", value_delimiter = ',')]
    pub allowed_role_arns: Vec<String>,
    /// `account/region` patterns that secrets may name. Default: all.
    #[arg(long, env = "KUBEECR_ALLOWED_REGISTRIES", value_delimiter = ',')]
    pub allowed_registries: Vec<String>,
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
}

impl PolicyArgs {
    pub fn policy(&self) -> Policy {
        let names = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        Policy {
            allowed_role_arns: Patterns::new(&self.allowed_role_arns),
            allowed_registries: Patterns::new(&self.allowed_registries),
            namespaces: names(&self.namespaces),
            exclude_namespaces: names(&self.exclude_namespaces),
        }
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
    /// Write every opted-in secret, due or not.
    #[arg(long, env = "KUBEECR_FORCE")]
    pub force: bool,
    /// Secrets processed at once.
    #[arg(long, env = "KUBEECR_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Secrets per list page (metadata only).
    #[arg(long, env = "KUBEECR_PAGE_SIZE", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub page_size: u32,
}

fn parse_refresh_before(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d > MAX_REFRESH_BEFORE {
        return Err(format!(
            "{s} is too long: ECR tokens live 12h, so use at most {}, e.g. 4h",
            humantime::format_duration(MAX_REFRESH_BEFORE)
        ));
    }
    Ok(d)
}

impl RefreshArgs {
    pub fn options(&self) -> RefreshOptions {
        RefreshOptions {
            due: DuePolicy {
                refresh_before: self.refresh_before,
                force: self.force,
            },
            concurrency: usize::from(self.concurrency),
            page_size: self.page_size,
            conflict_retries: 5,
        }
    }

    pub fn cache_config(&self, aws: &AwsArgs) -> CacheConfig {
        CacheConfig {
            renew_before: self.refresh_before + CACHE_HEADROOM,
            min_fetch_interval: aws.min_fetch_interval,
        }
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
    fn lists_are_comma_separated() {
        let cli = Cli::try_parse_from([
            "kubeecr",
            "refresh",
            "--namespace",
            "a,b",
            "--allowed-role-arns",
            "arn:aws:iam::123456789012:role/x*",
        ])
        .unwrap();
        let Command::Refresh(cmd) = cli.command else {
            panic!("parsed as refresh")
        };
        assert_eq!(cmd.policy.policy().namespaces, ["a", "b"]);
        assert!(
            cmd.policy
                .policy()
                .allowed_role_arns
                .matches("arn:aws:iam::123456789012:role/xyz")
        );
    }
}
