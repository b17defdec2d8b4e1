//! AWS partitions: which regions exist in which partition, and the DNS suffix of each.
//!
//! The data is the AWS SDK's own (`partitions.json`, copied from aws-sdk-ecr by
//! `scripts/update-partitions.py`). A region is accepted when the SDK lists it, or when the
//! operator names it with `--extra-regions` (a region newer than this build); anything else
//! would cost an ECR call, DNS lookups and a cache entry per invented name.

use std::collections::BTreeSet;
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
    AwsEusc,
}

const ALL: [(Partition, &str); 8] = [
    (Partition::Aws, "aws"),
    (Partition::AwsCn, "aws-cn"),
    (Partition::AwsUsGov, "aws-us-gov"),
    (Partition::AwsIso, "aws-iso"),
    (Partition::AwsIsoB, "aws-iso-b"),
    (Partition::AwsIsoE, "aws-iso-e"),
    (Partition::AwsIsoF, "aws-iso-f"),
    (Partition::AwsEusc, "aws-eusc"),
];

/// The SDK's partition data, as `scripts/update-partitions.py` writes it.
const PARTITIONS_JSON: &str = include_str!("partitions.json");

#[derive(serde::Deserialize)]
struct PartitionsFile {
    partitions: Vec<PartitionEntry>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartitionEntry {
    id: String,
    region_regex: String,
    regions: std::collections::BTreeMap<String, serde_json::Value>,
    outputs: PartitionOutputs,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartitionOutputs {
    dns_suffix: String,
}

struct PartitionSpec {
    partition: Partition,
    region: Regex,
    dns_suffix: String,
    regions: BTreeSet<String>,
}

static PARTITIONS: LazyLock<Vec<PartitionSpec>> = LazyLock::new(|| {
    let file: PartitionsFile =
        serde_json::from_str(PARTITIONS_JSON).expect("partitions.json is the SDK's valid JSON");
    file.partitions
        .into_iter()
        // A partition this build has no name for cannot be served; the unit tests keep the
        // two lists equal.
        .filter_map(|entry| {
            let partition = ALL.iter().find(|(_, id)| *id == entry.id)?.0;
            let region = Regex::new(&entry.region_regex).expect("the SDK's region regex");
            // `aws-global` and the like are endpoint aliases, not regions with registries.
            let regions = entry
                .regions
                .into_keys()
                .filter(|r| region.is_match(r))
                .collect();
            Some(PartitionSpec {
                partition,
                region,
                dns_suffix: entry.outputs.dns_suffix,
                regions,
            })
        })
        .collect()
});

/// Region names are matched byte for byte against registry hosts, so only lowercase ASCII
/// letters, digits and dashes are regions, whatever the SDK's `\w` would allow.
fn is_region_shaped(region: &str) -> bool {
    !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Partition {
    /// The partition whose region pattern the name fits, known region or not.
    pub fn of_region(region: &str) -> Option<Partition> {
        if !is_region_shaped(region) {
            return None;
        }
        PARTITIONS
            .iter()
            .find(|p| p.region.is_match(region))
            .map(|p| p.partition)
    }

    /// The partition named by an ARN's partition field (`aws`, `aws-cn`, ...).
    pub fn from_id(id: &str) -> Option<Partition> {
        ALL.iter().find(|(_, i)| *i == id).map(|(p, _)| *p)
    }

    fn spec(self) -> &'static PartitionSpec {
        PARTITIONS
            .iter()
            .find(|p| p.partition == self)
            .expect("every partition has a spec")
    }

    /// The partition's id as written in ARNs.
    pub fn id(self) -> &'static str {
        ALL.iter()
            .find(|(p, _)| *p == self)
            .map(|(_, id)| *id)
            .expect("every partition has an id")
    }

    /// The DNS suffix of the partition's ECR registry hosts.
    pub fn dns_suffix(self) -> &'static str {
        &self.spec().dns_suffix
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// The regions Secrets may name: the SDK's, and those the operator adds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Regions {
    extra: BTreeSet<String>,
}

/// How many regions this build knows, for messages.
pub fn known_region_count() -> usize {
    PARTITIONS.iter().map(|p| p.regions.len()).sum()
}

impl Regions {
    /// Adds regions newer than this build. Each must fit a partition's region pattern.
    pub fn with_extra<S: AsRef<str>>(extra: impl IntoIterator<Item = S>) -> Result<Self, String> {
        let mut regions = BTreeSet::new();
        for region in extra {
            let region = region.as_ref().trim();
            if region.is_empty() {
                continue;
            }
            if Partition::of_region(region).is_none() {
                return Err(format!(
                    "{:?} does not fit any AWS partition's region pattern; name regions as AWS does, e.g. us-west-2",
                    crate::contract::quote::prefix(region)
                ));
            }
            regions.insert(region.to_string());
        }
        Ok(Self { extra: regions })
    }

    /// The region's partition, when the region is known to this build or added by the
    /// operator.
    pub fn partition_of(&self, region: &str) -> Option<Partition> {
        let partition = Partition::of_region(region)?;
        let known = partition.spec().regions.contains(region) || self.extra.contains(region);
        known.then_some(partition)
    }

    /// The operator's extra regions.
    pub fn extra(&self) -> impl Iterator<Item = &str> {
        self.extra.iter().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_map_to_their_partition() {
        let regions = Regions::default();
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
            ("eusc-de-east-1", Partition::AwsEusc),
        ];
        for (region, partition) in cases {
            assert_eq!(regions.partition_of(region), Some(partition), "{region}");
        }
    }

    #[test]
    fn invented_regions_are_refused_unless_the_operator_adds_them() {
        let regions = Regions::default();
        for region in ["us-moon-1", "us-west-99", "eu-xyzzy-3", "cn-south-9"] {
            assert!(Partition::of_region(region).is_some(), "{region} is shaped");
            assert_eq!(regions.partition_of(region), None, "{region}");
        }
        let regions = Regions::with_extra(["us-moon-1", " "]).unwrap();
        assert_eq!(regions.partition_of("us-moon-1"), Some(Partition::Aws));
        assert_eq!(regions.partition_of("us-west-99"), None);
        let e = Regions::with_extra(["moon-base-1"]).unwrap_err();
        assert!(e.starts_with("\"moon-base-1\" does not fit"), "{e}");
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
            "us-wést-2",
            "aws-global",
        ] {
            assert_eq!(Regions::default().partition_of(region), None, "{region:?}");
        }
    }

    #[test]
    fn partition_ids_round_trip() {
        for (partition, id) in ALL {
            assert_eq!(Partition::from_id(id), Some(partition));
            assert_eq!(partition.id(), id);
        }
        assert_eq!(Partition::from_id("aws-moon"), None);
    }

    #[test]
    fn every_partition_of_the_data_has_a_name_and_hosts() {
        let file: PartitionsFile = serde_json::from_str(PARTITIONS_JSON).unwrap();
        let ids: BTreeSet<&str> = file.partitions.iter().map(|p| p.id.as_str()).collect();
        let named: BTreeSet<&str> = ALL.iter().map(|(_, id)| *id).collect();
        assert_eq!(ids, named, "add the new partition to ALL");
        assert_eq!(Partition::AwsEusc.dns_suffix(), "amazonaws.eu");
        assert_eq!(Partition::AwsCn.dns_suffix(), "amazonaws.com.cn");
        assert!(known_region_count() > 40, "{}", known_region_count());
    }

    /// The copy must be the SDK's: run `scripts/update-partitions.py` after a bump.
    #[test]
    fn partitions_match_the_sdk() {
        let Ok(cargo) = std::env::var("CARGO") else {
            eprintln!("SKIPPED: not run by cargo");
            return;
        };
        let rustc = std::process::Command::new("rustc")
            .arg("-vV")
            .output()
            .unwrap();
        let host = String::from_utf8(rustc.stdout).unwrap();
        let host = host
            .lines()
            .find_map(|l| l.strip_prefix("host: "))
            .expect("rustc -vV names the host");
        let out = std::process::Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--offline"])
            .args(["--filter-platform", host])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo metadata runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ecr = meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "aws-sdk-ecr")
            .expect("aws-sdk-ecr is a dependency");
        let manifest = std::path::Path::new(ecr["manifest_path"].as_str().unwrap());
        let source =
            std::fs::read_to_string(manifest.parent().unwrap().join("src/endpoint_lib.rs"))
                .unwrap();
        let marker = "new_from_json(b\"";
        let start = source.find(marker).expect("embedded partitions") + marker.len();
        let end = start + source[start..].find("\").expect").unwrap();
        let embedded = source[start..end]
            .replace("\\\\", "\u{0}")
            .replace("\\\"", "\"");
        let embedded = embedded.replace('\u{0}', "\\");
        let sdk: serde_json::Value = serde_json::from_str(&embedded).unwrap();
        let mut ours: serde_json::Value = serde_json::from_str(PARTITIONS_JSON).unwrap();
        ours.as_object_mut().unwrap().remove("_source");
        assert_eq!(
            ours, sdk,
            "src/contract/partitions.json differs from aws-sdk-ecr {}: run scripts/update-partitions.py",
            ecr["version"]
        );
    }
}
