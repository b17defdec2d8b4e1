//! Registry host forms: the names under which one ECR registry is reached, and which a Secret
//! asks kubeecr to write with `deft.com/kubeecr-hosts`.
//!
//! The patterns and where each exists are ECR's own, from the AWS General Reference ("Amazon
//! ECR endpoints and quotas"), for Docker and OCI clients:
//! - standard: `<account>.dkr.ecr.<region>.<partition's DNS suffix>`, everywhere;
//! - FIPS: `<account>.dkr.ecr-fips.<region>.amazonaws.com`, in the US commercial and GovCloud
//!   regions;
//! - dual-stack: `<account>.dkr-ecr.<region>.on.aws`, in the commercial (`aws`) partition;
//! - dual-stack FIPS: `<account>.dkr-ecr-fips.<region>.on.aws`, in the US commercial regions.
//!
//! One token serves every form of a registry: the forms change the name, not the registry.
//! Pure.

use std::fmt;

use crate::contract::partition::Partition;

/// Lists the host forms a Secret wants written, comma-separated; `standard` when absent.
pub const HOSTS_ANNOTATION: &str = "deft.com/kubeecr-hosts";

/// One name of a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostForm {
    Standard,
    Fips,
    DualStack,
    DualStackFips,
}

/// Regions with FIPS registry hosts, as ECR lists them.
const FIPS_REGIONS: [&str; 6] = [
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "us-gov-east-1",
    "us-gov-west-1",
];

impl HostForm {
    pub const ALL: [HostForm; 4] = [
        Self::Standard,
        Self::Fips,
        Self::DualStack,
        Self::DualStackFips,
    ];

    /// As written in `deft.com/kubeecr-hosts`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Fips => "fips",
            Self::DualStack => "dual-stack",
            Self::DualStackFips => "dual-stack-fips",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The registry's host in this form.
    pub fn host(self, account: &str, region: &str, partition: Partition) -> String {
        match self {
            Self::Standard => format!("{account}.dkr.ecr.{region}.{}", partition.dns_suffix()),
            Self::Fips => format!("{account}.dkr.ecr-fips.{region}.{}", partition.dns_suffix()),
            Self::DualStack => format!("{account}.dkr-ecr.{region}.on.aws"),
            Self::DualStackFips => format!("{account}.dkr-ecr-fips.{region}.on.aws"),
        }
    }

    /// Whether ECR has this form in `region`.
    pub fn exists(self, region: &str, partition: Partition) -> bool {
        let fips = FIPS_REGIONS.contains(&region);
        match self {
            Self::Standard => true,
            Self::Fips => fips,
            Self::DualStack => partition == Partition::Aws,
            Self::DualStackFips => fips && partition == Partition::Aws,
        }
    }

    /// Where this form exists, for a refusal.
    pub fn where_it_exists(self) -> String {
        let commercial = || {
            FIPS_REGIONS
                .iter()
                .filter(|r| Partition::of_region(r) == Some(Partition::Aws))
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Self::Standard => "every region".to_string(),
            Self::Fips => FIPS_REGIONS.join(", "),
            Self::DualStack => {
                "the regions of the aws partition (not China, GovCloud or ISO)".to_string()
            }
            Self::DualStackFips => commercial(),
        }
    }
}

impl fmt::Display for HostForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_follow_ecrs_endpoint_patterns() {
        let host = |form: HostForm, region| {
            let partition = Partition::of_region(region).unwrap();
            assert!(form.exists(region, partition), "{form} in {region}");
            form.host("123456789012", region, partition)
        };
        assert_eq!(
            host(HostForm::Standard, "cn-north-1"),
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            host(HostForm::Fips, "us-gov-west-1"),
            "123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com"
        );
        assert_eq!(
            host(HostForm::DualStack, "eu-central-1"),
            "123456789012.dkr-ecr.eu-central-1.on.aws"
        );
        assert_eq!(
            host(HostForm::DualStackFips, "us-east-2"),
            "123456789012.dkr-ecr-fips.us-east-2.on.aws"
        );
    }

    #[test]
    fn forms_exist_only_where_ecr_has_them() {
        let exists =
            |form: HostForm, region| form.exists(region, Partition::of_region(region).unwrap());
        assert!(!exists(HostForm::Fips, "eu-central-1"));
        assert!(!exists(HostForm::DualStack, "cn-north-1"));
        assert!(!exists(HostForm::DualStack, "us-gov-west-1"));
        assert!(!exists(HostForm::DualStackFips, "us-gov-west-1"));
        assert!(!exists(HostForm::Fips, "us-isob-east-1"));
        for form in HostForm::ALL {
            assert_eq!(HostForm::parse(form.name()), Some(form));
        }
        assert_eq!(HostForm::parse("FIPS"), None);
    }
}
