//! AWS partitions: which regions exist in which partition, and the DNS suffix of each.
//!
//! The patterns follow the region regexes of the AWS SDK's `partitions.json`, restricted to
//! lowercase because registry hosts are matched byte for byte in `.dockerconfigjson`.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

/// An AWS partition that hosts ECR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Partition {
    Aws,
    AwsCn,
    AwsUsGov,
    AwsIso,
    AwsIsoB,
    AwsIsoE,
    AwsIsoF,
}

struct PartitionSpec {
    partition: Partition,
    id: &'static str,
    region: Regex,
    dns_suffix: &'static str,
}

static PARTITIONS: LazyLock<Vec<PartitionSpec>> = LazyLock::new(|| {
    let spec = |partition, id, pattern: &str, dns_suffix| PartitionSpec {
        partition,
        id,
        region: Regex::new(pattern).expect("static region pattern"),
        dns_suffix,
    };
    // Most specific first: `us-gov-west-1` must not be taken for a commercial region.
    vec![
        spec(
            Partition::AwsUsGov,
            "aws-us-gov",
            r"^us-gov-[a-z0-9]+-[0-9]+$",
            "amazonaws.com",
        ),
        spec(
            Partition::AwsIso,
            "aws-iso",
            r"^us-iso-[a-z0-9]+-[0-9]+$",
            "c2s.ic.gov",
        ),
        spec(
            Partition::AwsIsoB,
            "aws-iso-b",
            r"^us-isob-[a-z0-9]+-[0-9]+$",
            "sc2s.sgov.gov",
        ),
        spec(
            Partition::AwsIsoE,
            "aws-iso-e",
            r"^eu-isoe-[a-z0-9]+-[0-9]+$",
            "cloud.adc-e.uk",
        ),
        spec(
            Partition::AwsIsoF,
            "aws-iso-f",
            r"^us-isof-[a-z0-9]+-[0-9]+$",
            "csp.hci.ic.gov",
        ),
        spec(
            Partition::AwsCn,
            "aws-cn",
            r"^cn-[a-z0-9]+-[0-9]+$",
            "amazonaws.com.cn",
        ),
        spec(
            Partition::Aws,
            "aws",
            r"^(us|eu|ap|sa|ca|me|af|il|mx)-[a-z0-9]+-[0-9]+$",
            "amazonaws.com",
        ),
    ]
});

impl Partition {
    /// The partition of a region name, or `None` when no partition has such a region.
    pub fn of_region(region: &str) -> Option<Partition> {
        PARTITIONS
            .iter()
            .find(|p| p.region.is_match(region))
            .map(|p| p.partition)
    }

    /// The partition named by an ARN's partition field (`aws`, `aws-cn`, ...).
    pub fn from_id(id: &str) -> Option<Partition> {
        PARTITIONS.iter().find(|p| p.id == id).map(|p| p.partition)
    }

    fn spec(self) -> &'static PartitionSpec {
        PARTITIONS
            .iter()
            .find(|p| p.partition == self)
            .expect("every partition has a spec")
    }

    /// The partition's id as written in ARNs.
    pub fn id(self) -> &'static str {
        self.spec().id
    }

    /// The DNS suffix of the partition's ECR registry hosts.
    pub fn dns_suffix(self) -> &'static str {
        self.spec().dns_suffix
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_map_to_their_partition() {
        let cases = [
            ("us-west-2", Partition::Aws),
            ("eu-central-1", Partition::Aws),
            ("ap-southeast-5", Partition::Aws),
            ("il-central-1", Partition::Aws),
            ("mx-central-1", Partition::Aws),
            ("cn-north-1", Partition::AwsCn),
            ("cn-northwest-1", Partition::AwsCn),
            ("us-gov-west-1", Partition::AwsUsGov),
            ("us-iso-east-1", Partition::AwsIso),
            ("us-isob-east-1", Partition::AwsIsoB),
            ("eu-isoe-west-1", Partition::AwsIsoE),
            ("us-isof-south-1", Partition::AwsIsoF),
        ];
        for (region, partition) in cases {
            assert_eq!(Partition::of_region(region), Some(partition), "{region}");
        }
    }

    #[test]
    fn non_regions_are_refused() {
        for region in [
            "",
            "us-west",
            "US-WEST-2",
            "us-west-2a",
            "xx-west-2",
            "us_west_2",
            "us--2",
        ] {
            assert_eq!(Partition::of_region(region), None, "{region:?}");
        }
    }

    #[test]
    fn partition_ids_round_trip() {
        for id in [
            "aws",
            "aws-cn",
            "aws-us-gov",
            "aws-iso",
            "aws-iso-b",
            "aws-iso-e",
            "aws-iso-f",
        ] {
            assert_eq!(Partition::from_id(id).map(Partition::id), Some(id));
        }
        assert_eq!(Partition::from_id("aws-moon"), None);
    }
}
