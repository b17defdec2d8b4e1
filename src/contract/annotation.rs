//! The annotation contract: how a Secret opts in, and what its annotations mean.
//!
//! Pure: no I/O. Every error names the secret, quotes (a short prefix of) the bad value, says
//! what is wrong and shows a valid example. Values are bounded before they are parsed: an
//! annotation costs at most `MAX_REGIONS` token fetches, whatever it holds.

use std::collections::HashSet;
use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

use crate::contract::hosts::HostForm;
use crate::contract::marks::Marks;
pub use crate::contract::marks::{
    EXPIRES_AT_ANNOTATION, FINGERPRINTS_ANNOTATION, MANAGED_LABEL, OWN_ANNOTATIONS,
    REGISTRIES_ANNOTATION, ROLE_ANNOTATION,
};
use crate::contract::partition::{Partition, Regions};
use crate::contract::quote::quoted;

pub use crate::contract::shape::DOCKER_CONFIG_JSON_TYPE;

pub use crate::contract::problem::{
    ContractError, MAX_REGIONS, MAX_REGISTRIES, MAX_REGISTRIES_BYTES, Problem,
};
pub use crate::contract::secret_ref::SecretRef;

/// One ECR registry: an account in a region.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Registry {
    account: String,
    region: String,
}

impl Registry {
    pub fn account(&self) -> &str {
        &self.account
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn partition(&self) -> Partition {
        Partition::of_region(&self.region).expect("regions are checked on parse")
    }

    /// The registry's standard host, as written in `.dockerconfigjson` and in image
    /// references.
    pub fn host(&self) -> String {
        self.host_as(HostForm::Standard)
    }

    pub fn host_as(&self, form: HostForm) -> String {
        form.host(&self.account, &self.region, self.partition())
    }
}

impl fmt::Display for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.account, self.region)
    }
}

/// An IAM role ARN, checked for syntax.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleArn {
    arn: String,
    partition_id: String,
}

impl RoleArn {
    pub fn as_str(&self) -> &str {
        &self.arn
    }

    pub fn partition(&self) -> Partition {
        Partition::from_id(&self.partition_id).expect("partitions are checked on parse")
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

/// What an opted-in Secret asks for: its registries, the host forms to write each under, and
/// the role to fetch them with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrBinding {
    pub registries: Vec<Registry>,
    pub role: Option<RoleArn>,
    /// At least one; `standard` unless `deft.com/kubeecr-hosts` says otherwise.
    pub hosts: Vec<HostForm>,
}

impl EcrBinding {
    /// Every host kubeecr writes for the Secret: each registry under each form.
    pub fn targets(&self) -> impl Iterator<Item = Target<'_>> {
        self.registries.iter().flat_map(|registry| {
            self.hosts
                .iter()
                .map(move |&form| Target { registry, form })
        })
    }
}

/// One host kubeecr writes: a registry under one of its names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    pub registry: &'a Registry,
    pub form: HostForm,
}

impl Target<'_> {
    pub fn host(&self) -> String {
        self.registry.host_as(self.form)
    }

    /// Its key in `deft.com/kubeecr-fingerprints`: `<account>/<region>` for the standard host
    /// (as kubeecr has always written it), with `@<form>` for the others.
    pub fn key(&self) -> String {
        match self.form {
            HostForm::Standard => self.registry.to_string(),
            form => format!("{}@{form}", self.registry),
        }
    }
}

/// Where in the annotation a part is: nothing when it has one entry, else which.
fn at(count: usize, index: usize) -> String {
    if count == 1 {
        String::new()
    } else {
        format!(" entry {}", index + 1)
    }
}

/// An entry, quoted once, after where it is: `"<entry>"` or `entry 2 "<entry>"`.
fn quote_entry(at: &str, entry: &str) -> String {
    match at.trim_start() {
        "" => quoted(entry),
        at => format!("{at} {}", quoted(entry)),
    }
}

/// IAM's own character set for role paths and names: ASCII only, unlike regex's `\w`.
static ROLE_ARN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^arn:([a-z0-9-]+):iam::([0-9]{12}):role/((?:[A-Za-z0-9_+=,.@-]+/)*)([A-Za-z0-9_+=,.@-]{1,64})$",
    )
    .expect("static role pattern")
});

/// Reads a Secret's opt-in annotations. `Ok(None)`: the secret has not opted in.
pub fn binding_of(
    secret: &SecretRef,
    marks: &Marks,
    regions: &Regions,
) -> Result<Option<EcrBinding>, ContractError> {
    let Some(value) = marks.registries() else {
        return Ok(None);
    };
    let registries = parse_registries(value, regions).map_err(|p| ContractError::new(secret, p))?;
    let role = match marks.role() {
        None => None,
        Some(arn) => Some(parse_role(arn, &registries).map_err(|p| ContractError::new(secret, p))?),
    };
    let hosts = match marks.hosts() {
        None => vec![HostForm::Standard],
        Some(value) => {
            parse_hosts(value, &registries).map_err(|p| ContractError::new(secret, p))?
        }
    };
    Ok(Some(EcrBinding {
        registries,
        role,
        hosts,
    }))
}

/// Parses `deft.com/kubeecr-hosts`: known forms, each once, each existing for every registry,
/// and at most `MAX_REGISTRIES` hosts in all (each costs a merge and a fingerprint, not a
/// token fetch).
pub fn parse_hosts(value: &str, registries: &[Registry]) -> Result<Vec<HostForm>, Problem> {
    if value.len() > MAX_REGISTRIES_BYTES {
        return Err(Problem::BadHostForm {
            form: format!("a value of {} bytes", value.len()),
        });
    }
    let mut forms: Vec<HostForm> = Vec::new();
    for name in value.split(',').map(str::trim) {
        let form =
            HostForm::parse(name).ok_or_else(|| Problem::BadHostForm { form: quoted(name) })?;
        if forms.contains(&form) {
            return Err(Problem::DuplicateHostForm { form });
        }
        forms.push(form);
    }
    for &form in &forms {
        if let Some(registry) = registries
            .iter()
            .find(|r| !form.exists(r.region(), r.partition()))
        {
            return Err(Problem::HostFormUnavailable {
                form,
                registry: registry.to_string(),
                regions: form.where_it_exists(),
            });
        }
    }
    let count = registries.len() * forms.len();
    if count > MAX_REGISTRIES {
        return Err(Problem::TooManyHosts {
            registries: registries.len(),
            forms: forms.len(),
            count,
        });
    }
    Ok(forms)
}

/// Parses `<account>/<region>[, ...]`: at most `MAX_REGISTRIES` entries in at most
/// `MAX_REGIONS` regions, each region known to `regions`. Linear in the value's length.
pub fn parse_registries(value: &str, regions: &Regions) -> Result<Vec<Registry>, Problem> {
    if value.len() > MAX_REGISTRIES_BYTES {
        return Err(Problem::TooLong);
    }
    if value.trim().is_empty() {
        return Err(Problem::EmptyValue);
    }
    let count = value.split(',').count();
    if count > MAX_REGISTRIES {
        return Err(Problem::TooManyRegistries { count });
    }
    let mut registries: Vec<Registry> = Vec::with_capacity(count);
    for (index, entry) in value.split(',').map(str::trim).enumerate() {
        if entry.is_empty() {
            return Err(Problem::EmptyEntry { entry: index + 1 });
        }
        registries.push(parse_entry(&at(count, index), entry, regions)?);
    }
    // Linear: at most MAX_REGISTRIES entries, each hashed once.
    let mut seen = HashSet::with_capacity(registries.len());
    if let Some(twice) = registries.iter().find(|r| !seen.insert(*r)) {
        return Err(Problem::Duplicate {
            entry: twice.to_string(),
        });
    }
    let distinct: HashSet<&str> = registries.iter().map(Registry::region).collect();
    if distinct.len() > MAX_REGIONS {
        return Err(Problem::TooManyRegions {
            count: distinct.len(),
        });
    }
    Ok(registries)
}

fn parse_entry(at: &str, entry: &str, regions: &Regions) -> Result<Registry, Problem> {
    let (account, region) = entry
        .split_once('/')
        .filter(|(a, r)| !a.trim().is_empty() && !r.trim().is_empty() && !r.contains('/'))
        .ok_or_else(|| Problem::NotAccountRegion {
            value: quote_entry(at, entry),
        })?;
    let (account, region) = (account.trim(), region.trim());
    let known = regions.partition_of(region);
    let example_region = if known.is_some() { region } else { "us-west-2" }.to_string();
    let digits = account.bytes().all(|b| b.is_ascii_digit());
    if digits && account.len() < 12 {
        return Err(Problem::ShortAccount {
            value: quote_entry(at, entry),
            account: account.to_string(),
            digits: account.len(),
            padded: format!("{account:0>12}"),
            region: example_region,
        });
    }
    if account.len() != 12 || !digits {
        return Err(Problem::BadAccount {
            value: quote_entry(at, entry),
            region: example_region,
        });
    }
    if known.is_some() {
        return Ok(Registry {
            account: account.to_string(),
            region: region.to_string(),
        });
    }
    let lower = region.to_lowercase();
    Err(
        if lower != region && regions.partition_of(&lower).is_some() {
            Problem::UppercaseRegion {
                at: at.to_string(),
                account: account.to_string(),
                region: quoted(region),
                lower,
            }
        } else if Partition::of_region(region).is_some() {
            Problem::UnknownRegion {
                at: at.to_string(),
                account: account.to_string(),
                region: quoted(region),
            }
        } else {
            Problem::NotARegion {
                at: at.to_string(),
                account: account.to_string(),
                region: quoted(region),
            }
        },
    )
}

/// Parses a role ARN and checks that it can serve every registry's partition.
pub fn parse_role(value: &str, registries: &[Registry]) -> Result<RoleArn, Problem> {
    let bad = || Problem::BadRoleArn {
        value: quoted(value),
    };
    // The length as written, before trimming: what the refresher keeps of a longer value
    // (`marks::kept`) must be refused all the same.
    if value.len() > 2048 {
        return Err(bad());
    }
    let arn = value.trim();
    let caps = ROLE_ARN.captures(arn).ok_or_else(bad)?;
    let partition_id = &caps[1];
    let role_partition = Partition::from_id(partition_id).ok_or_else(bad)?;
    if caps[3].len() > 512 {
        return Err(bad());
    }
    if let Some(registry) = registries.iter().find(|r| r.partition() != role_partition) {
        return Err(Problem::RolePartitionMismatch {
            value: quoted(value),
            role_partition,
            registry: registry.to_string(),
            registry_partition: registry.partition(),
        });
    }
    Ok(RoleArn {
        arn: arn.to_string(),
        partition_id: partition_id.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::hosts::HOSTS_ANNOTATION;
    use crate::contract::problem::ROLE_EXAMPLE;
    use proptest::prelude::*;

    fn regions() -> Regions {
        Regions::default()
    }

    fn secret() -> SecretRef {
        SecretRef::new("default", "pull")
    }

    fn annotations(pairs: &[(&str, &str)]) -> Marks {
        let map: std::collections::BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Marks::of_annotations(&map)
    }

    fn error_of(value: &str) -> String {
        binding_of(
            &secret(),
            &annotations(&[(REGISTRIES_ANNOTATION, value)]),
            &regions(),
        )
        .unwrap_err()
        .to_string()
    }

    #[test]
    fn no_annotation_means_not_opted_in() {
        let got = binding_of(&secret(), &annotations(&[("other", "x")]), &regions()).unwrap();
        assert_eq!(got, None);
    }

    #[test]
    fn parses_entries_with_spaces_and_derives_hosts() {
        let value = " 123456789012/us-west-2 , 210987654321/cn-north-1,111111111111/us-iso-east-1";
        let binding = binding_of(
            &secret(),
            &annotations(&[(REGISTRIES_ANNOTATION, value)]),
            &regions(),
        )
        .unwrap()
        .unwrap();
        let hosts: Vec<String> = binding.registries.iter().map(Registry::host).collect();
        assert_eq!(
            hosts,
            [
                "123456789012.dkr.ecr.us-west-2.amazonaws.com",
                "210987654321.dkr.ecr.cn-north-1.amazonaws.com.cn",
                "111111111111.dkr.ecr.us-iso-east-1.c2s.ic.gov",
            ]
        );
        assert_eq!(binding.role, None);
    }

    #[test]
    fn hosts_of_every_partition() {
        let cases = [
            (
                "us-gov-west-1",
                "123456789012.dkr.ecr.us-gov-west-1.amazonaws.com",
            ),
            (
                "us-isob-east-1",
                "123456789012.dkr.ecr.us-isob-east-1.sc2s.sgov.gov",
            ),
            (
                "eu-isoe-west-1",
                "123456789012.dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk",
            ),
            (
                "us-isof-south-1",
                "123456789012.dkr.ecr.us-isof-south-1.csp.hci.ic.gov",
            ),
        ];
        for (region, host) in cases {
            let r = parse_registries(&format!("123456789012/{region}"), &regions()).unwrap();
            assert_eq!(r[0].host(), host);
        }
    }

    #[test]
    fn short_account_message_matches_the_contract() {
        // KubeECR's own README example had 9 digits.
        assert_eq!(
            error_of("123456789/us-west-2"),
            r#"default/pull: deft.com/kubeecr "123456789/us-west-2": account id 123456789 has 9 digits; AWS account ids have 12, leading zeros included: if it lost them, write 000123456789/us-west-2"#
        );
        assert_eq!(
            error_of("1234567890123/us-west-2"),
            r#"default/pull: deft.com/kubeecr "1234567890123/us-west-2": account id must be 12 digits, e.g. 123456789012/us-west-2"#
        );
    }

    #[test]
    fn bad_entry_among_several_is_named() {
        let msg = error_of("123456789012/us-west-2, 12345678901x/eu-west-1");
        assert_eq!(
            msg,
            r#"default/pull: deft.com/kubeecr entry 2 "12345678901x/eu-west-1": account id must be 12 digits, e.g. 123456789012/eu-west-1"#
        );
    }

    #[test]
    fn each_problem_has_an_actionable_message() {
        let cases = [
            ("", "is empty"),
            ("   ", "is empty"),
            ("123456789012/us-west-2,", "entry 2 is empty"),
            ("123456789012", "must be <account>/<region>"),
            ("123456789012/", "must be <account>/<region>"),
            ("123456789012/us-west-2/x", "must be <account>/<region>"),
            (
                "123456789012/US-WEST-2",
                "must be lowercase, e.g. 123456789012/us-west-2",
            ),
            (
                "123456789012/moon-base-1",
                r#""moon-base-1" is not an AWS region"#,
            ),
            (
                "123456789012/us-west-2,123456789012/us-west-2",
                "lists 123456789012/us-west-2 more than once",
            ),
            (
                "１２３４５６７８９０１２/us-west-2",
                "account id must be 12 digits",
            ),
        ];
        for (value, expected) in cases {
            let msg = error_of(value);
            assert!(msg.starts_with("default/pull: "), "{msg}");
            assert!(msg.contains(expected), "{value:?}: {msg}");
            assert!(msg.contains("e.g.") || msg.contains("once"), "{msg}");
        }
    }

    #[test]
    fn invented_regions_are_refused_before_any_fetch() {
        let msg = error_of("123456789012/us-moon-1");
        assert_eq!(
            msg,
            r#"default/pull: deft.com/kubeecr: "us-moon-1" is not an AWS region this kubeecr knows, e.g. 123456789012/us-west-2; if AWS opened it after this release, its operator can add it with --extra-regions"#
        );
        let added = Regions::with_extra(["us-moon-1"]).unwrap();
        let r = parse_registries("123456789012/us-moon-1", &added).unwrap();
        assert_eq!(r[0].host(), "123456789012.dkr.ecr.us-moon-1.amazonaws.com");
    }

    #[test]
    fn entries_and_regions_per_secret_are_capped() {
        let entries = |n: usize, regions: &[&str]| {
            (0..n)
                .map(|i| format!("{:012}/{}", i, regions[i % regions.len()]))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert!(parse_registries(&entries(MAX_REGISTRIES, &["us-west-2"]), &regions()).is_ok());
        let msg = error_of(&entries(MAX_REGISTRIES + 1, &["us-west-2"]));
        assert!(msg.contains("lists 21 entries; list at most 20"), "{msg}");
        let eleven = [
            "us-east-1",
            "us-east-2",
            "us-west-1",
            "us-west-2",
            "eu-west-1",
            "eu-west-2",
            "eu-west-3",
            "eu-central-1",
            "ap-south-1",
            "ap-northeast-1",
            "sa-east-1",
        ];
        assert!(parse_registries(&entries(10, &eleven[..10]), &regions()).is_ok());
        let msg = error_of(&entries(11, &eleven));
        assert!(msg.contains("names 11 regions; name at most 10"), "{msg}");
    }

    #[test]
    fn thousands_of_entries_are_refused_unread_with_a_short_message() {
        let value = (0..5000)
            .map(|i| format!("123456789012/us-x{i}-1"))
            .collect::<Vec<_>>()
            .join(",");
        let msg = error_of(&value);
        assert!(msg.contains("is longer than 2048 bytes"), "{msg}");
        assert!(msg.len() < 300, "{msg}");
        let value = format!("123456789012/{}", "a".repeat(1500));
        let msg = error_of(&value);
        assert!(msg.contains(r#"aaa...""#), "{msg}");
        assert!(msg.len() < 400, "{msg}");
    }

    /// Every refusal of a hostile value, for a Secret of the longest name: within the 512
    /// characters of a refusal or Event note, each quote within 64 as printed, the bad value
    /// quoted once.
    #[test]
    fn refusals_stay_within_their_bounds_whatever_the_value() {
        let longest = SecretRef::new("n".repeat(63), "s".repeat(253));
        let control = format!("123456789012/u{}", "\u{16}".repeat(135));
        let wide = format!("123456789012/{}", "漢🦀".repeat(500));
        let many = format!("{},{control}", "123456789012/us-west-2");
        let escapes = format!("12345/{}", "\\\"\n".repeat(200));
        let role = format!("arn:aws:iam::123456789012:role/{}", "\u{7}".repeat(300));
        for (registries, role) in [
            (control.as_str(), None),
            (&wide, None),
            (&many, None),
            (&escapes, None),
            ("123456789012/us-west-2", Some(role.as_str())),
            (&"\u{16}/".repeat(300), None),
        ] {
            let mut pairs = vec![(REGISTRIES_ANNOTATION, registries)];
            pairs.extend(role.map(|r| (ROLE_ANNOTATION, r)));
            let e = binding_of(&longest, &annotations(&pairs), &regions()).unwrap_err();
            let msg = e.to_string();
            assert!(msg.chars().count() <= 512, "{}: {msg}", msg.chars().count());
            let quotes = msg.matches("\"").count() - msg.matches("\\\"").count();
            assert!(quotes <= 2, "quoted once: {msg}");
            let problem = e.problem.to_string();
            assert!(problem.chars().count() <= 300, "{problem}");
        }
        // The regression the first long fuzzing run found: 1,127 characters before.
        let msg = binding_of(
            &longest,
            &annotations(&[(REGISTRIES_ANNOTATION, &control)]),
            &regions(),
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains(r#"\u{16}...""#), "{msg}");
        assert!(
            msg.contains(&format!("{}/{}...", "n".repeat(63), "s".repeat(61))),
            "{msg}"
        );
    }

    #[test]
    fn role_names_are_ascii_as_iam_requires() {
        for bad in [
            "arn:aws:iam::123456789012:role/ecr-pull-é",
            "arn:aws:iam::123456789012:role/ｅｃｒ",
            "arn:aws:iam::123456789012:role/team/名前",
        ] {
            let got = parse_role(bad, &[]);
            assert!(matches!(got, Err(Problem::BadRoleArn { .. })), "{bad}");
        }
        assert!(parse_role("arn:aws:iam::123456789012:role/a_b+c=d,e.f@g-h", &[]).is_ok());
    }

    #[test]
    fn role_is_parsed_and_checked_against_partitions() {
        let ok = annotations(&[
            (REGISTRIES_ANNOTATION, "123456789012/us-gov-west-1"),
            (
                ROLE_ANNOTATION,
                "arn:aws-us-gov:iam::123456789012:role/team/ecr-pull",
            ),
        ]);
        let binding = binding_of(&secret(), &ok, &regions()).unwrap().unwrap();
        assert_eq!(
            binding.role.unwrap().as_str(),
            "arn:aws-us-gov:iam::123456789012:role/team/ecr-pull"
        );

        let mismatch = annotations(&[
            (REGISTRIES_ANNOTATION, "123456789012/cn-north-1"),
            (ROLE_ANNOTATION, "arn:aws:iam::123456789012:role/ecr-pull"),
        ]);
        let msg = binding_of(&secret(), &mismatch, &regions())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("partition aws but registry 123456789012/cn-north-1 is in aws-cn"),
            "{msg}"
        );

        for bad in [
            "arn:aws:iam::12345:role/x",
            "arn:aws:iam::123456789012:user/x",
            "arn:aws:sts::123456789012:role/x",
            "arn:aws-moon:iam::123456789012:role/x",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role/a b",
        ] {
            let a = annotations(&[
                (REGISTRIES_ANNOTATION, "123456789012/us-west-2"),
                (ROLE_ANNOTATION, bad),
            ]);
            let msg = binding_of(&secret(), &a, &regions())
                .unwrap_err()
                .to_string();
            assert!(msg.contains("not an IAM role ARN"), "{bad}: {msg}");
            assert!(msg.contains(ROLE_EXAMPLE), "{msg}");
        }
    }

    fn hosts_of(registries: &str, hosts: &str) -> Result<Vec<String>, String> {
        let marks = annotations(&[
            (REGISTRIES_ANNOTATION, registries),
            (HOSTS_ANNOTATION, hosts),
        ]);
        match binding_of(&secret(), &marks, &regions()) {
            Ok(binding) => Ok(binding.unwrap().targets().map(|t| t.host()).collect()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn host_forms_write_each_registry_under_each_name() {
        assert_eq!(
            hosts_of(
                "123456789012/us-east-1, 210987654321/us-gov-west-1",
                " standard , fips"
            )
            .unwrap(),
            [
                "123456789012.dkr.ecr.us-east-1.amazonaws.com",
                "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com",
                "210987654321.dkr.ecr.us-gov-west-1.amazonaws.com",
                "210987654321.dkr.ecr-fips.us-gov-west-1.amazonaws.com",
            ]
        );
        assert_eq!(
            hosts_of("123456789012/us-east-2", "dual-stack-fips").unwrap(),
            ["123456789012.dkr-ecr-fips.us-east-2.on.aws"]
        );
        let keys: Vec<String> = binding_of(
            &secret(),
            &annotations(&[
                (REGISTRIES_ANNOTATION, "123456789012/us-west-2"),
                (HOSTS_ANNOTATION, "standard,dual-stack"),
            ]),
            &regions(),
        )
        .unwrap()
        .unwrap()
        .targets()
        .map(|t| t.key())
        .collect();
        assert_eq!(
            keys,
            [
                "123456789012/us-west-2",
                "123456789012/us-west-2@dual-stack"
            ]
        );
    }

    #[test]
    fn host_forms_are_refused_where_ecr_has_none_with_where_it_does() {
        let e = hosts_of("123456789012/eu-central-1", "standard,fips").unwrap_err();
        assert_eq!(
            e,
            "default/pull: deft.com/kubeecr-hosts: ECR has no fips host for 123456789012/eu-central-1; fips hosts exist in us-east-1, us-east-2, us-west-1, us-west-2, us-gov-east-1, us-gov-west-1; remove fips, or name a registry there"
        );
        let e = hosts_of("123456789012/cn-north-1", "dual-stack").unwrap_err();
        assert!(
            e.contains("dual-stack hosts exist in the regions of the aws partition"),
            "{e}"
        );
        let e = hosts_of("123456789012/us-west-2", "standard,FIPS").unwrap_err();
        assert!(
            e.contains(r#"deft.com/kubeecr-hosts: "FIPS" is not a host form"#)
                && e.contains("e.g. standard,fips"),
            "{e}"
        );
        let e = hosts_of("123456789012/us-west-2", "fips,fips").unwrap_err();
        assert!(e.contains("lists fips more than once"), "{e}");
        let e = hosts_of("123456789012/us-west-2", "").unwrap_err();
        assert!(e.contains(r#""" is not a host form"#), "{e}");
        // The cap counts hosts, not registries: 10 registries in 3 forms are 30 hosts.
        let ten: Vec<String> = (0..10)
            .map(|i| format!("12345678901{i}/us-east-1"))
            .collect();
        let e = hosts_of(&ten.join(","), "standard,fips,dual-stack").unwrap_err();
        assert!(
            e.contains("10 registries in 3 host forms make 30 hosts; write at most 20"),
            "{e}"
        );
        assert_eq!(hosts_of(&ten.join(","), "standard,fips").unwrap().len(), 20);
    }

    proptest! {
        #[test]
        fn any_valid_list_round_trips(
            entries in proptest::collection::btree_set(
                ("[0-9]{12}", prop::sample::select(vec!["us-west-2", "eu-central-1", "cn-north-1", "us-gov-east-1", "ap-south-2"])),
                1..6,
            ),
            sep in prop::sample::select(vec![",", ", ", " , "]),
        ) {
            let value = entries.iter().map(|(a, r)| format!("{a}/{r}")).collect::<Vec<_>>().join(sep);
            let parsed = parse_registries(&value, &regions()).unwrap();
            let back: Vec<(String, String)> = parsed.iter().map(|r| (r.account().to_string(), r.region().to_string())).collect();
            let expected: Vec<(String, String)> = entries.iter().map(|(a, r)| (a.clone(), r.to_string())).collect();
            prop_assert_eq!(back, expected);
        }

        #[test]
        fn arbitrary_input_never_panics_and_errors_quote_it(value in ".{0,80}") {
            if let Err(e) = binding_of(&secret(), &annotations(&[(REGISTRIES_ANNOTATION, &value)]), &regions()) {
                let msg = e.to_string();
                prop_assert!(msg.starts_with("default/pull: deft.com/kubeecr"));
                // Each refusal shows a way out: an example, the padded account, or "list it once".
                prop_assert!(
                    msg.contains("e.g.") || msg.contains("more than once") || msg.contains("if it lost them, write"),
                    "{}", msg
                );
            }
        }

        #[test]
        fn accounts_of_other_lengths_are_refused(account in "[0-9]{1,11}|[0-9]{13,20}") {
            let value = format!("{account}/us-west-2");
            let refused = parse_registries(&value, &regions());
            if account.len() < 12 {
                let padded = format!("{account:0>12}");
                let short = matches!(&refused, Err(Problem::ShortAccount { padded: p, .. }) if *p == padded);
                prop_assert!(short, "{refused:?}");
                let fixed = format!("{padded}/us-west-2");
                prop_assert!(parse_registries(&fixed, &regions()).is_ok());
            } else {
                prop_assert!(matches!(refused, Err(Problem::BadAccount { .. })), "{refused:?}");
            }
        }
    }
}
