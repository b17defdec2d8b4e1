//! Argument groups that several subcommands share: AWS, the policy, and how Secrets are
//! refreshed. Each turns into the settings of the module it configures.

use std::num::NonZeroU32;
use std::time::Duration;

use clap::Args;

use crate::cmd::duration::{FIVE_MINUTES, HOUR, SECOND, duration_within, parse_refresh_before};
use crate::contract::partition::Regions;
use crate::contract::policy::{
    NamespaceRules, NamespaceSet, OWN_IDENTITY_FLAG, Policy, REGISTRY_FLAG, ROLE_FLAG,
    is_namespace_name,
};
use crate::contract::secret_update::DuePolicy;
use crate::k8s::KubeSettings;
use crate::refresher::pass::PassSettings;
use crate::refresher::write::{WriteRate, WriteSettings};
use crate::tokens::cache::CacheConfig;
use crate::tokens::ecr::EcrSettings;

/// What refreshing Secrets takes, for `refresh` and `serve` alike: the cluster, AWS, the
/// policy and the pace.
#[derive(Debug, Clone, Args)]
pub struct RefresherArgs {
    #[command(flatten)]
    pub kube: KubeSettings,
    #[command(flatten)]
    pub aws: AwsArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub refresh: RefreshArgs,
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
