//! What is wrong with a Secret's annotations, its shape or the policy's view of it: each
//! problem as a refusal prints it, naming the bad value once and the way out. Pure.

use crate::contract::hosts::{HOSTS_ANNOTATION, HostForm};
use crate::contract::marks::{REGISTRIES_ANNOTATION, ROLE_ANNOTATION};
use crate::contract::partition::Partition;
use crate::contract::secret_ref::SecretRef;
use crate::contract::shape::{ARGOCD_LABEL, BASIC_AUTH_TYPE, DOCKER_CONFIG_JSON_TYPE, Shape};

pub(crate) const REGISTRIES_EXAMPLE: &str = "123456789012/us-west-2";
pub(crate) const ROLE_EXAMPLE: &str = "arn:aws:iam::123456789012:role/ecr-pull";

/// A Secret's annotations break the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {problem}", secret.short())]
pub struct ContractError {
    pub secret: SecretRef,
    pub problem: Box<Problem>,
}

/// Longest `deft.com/kubeecr` value read; longer ones are refused unparsed.
pub const MAX_REGISTRIES_BYTES: usize = 2048;
/// Registries one Secret may list.
pub const MAX_REGISTRIES: usize = 20;
/// Distinct regions one Secret may list: each costs one GetAuthorizationToken call.
pub const MAX_REGIONS: usize = 10;

/// What is wrong, with the bad value quoted (a short prefix of it) and a valid example.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error(
        "{REGISTRIES_ANNOTATION} is empty: list one or more <account>/<region> entries, e.g. {REGISTRIES_EXAMPLE}"
    )]
    EmptyValue,
    #[error(
        "{REGISTRIES_ANNOTATION} is longer than {MAX_REGISTRIES_BYTES} bytes, so it is not read; list at most {MAX_REGISTRIES} <account>/<region> entries, e.g. {REGISTRIES_EXAMPLE}"
    )]
    TooLong,
    #[error(
        "{REGISTRIES_ANNOTATION}: lists {count} entries; list at most {MAX_REGISTRIES} registries per Secret, and split the rest over more Secrets"
    )]
    TooManyRegistries { count: usize },
    #[error(
        "{REGISTRIES_ANNOTATION}: names {count} regions; name at most {MAX_REGIONS} regions per Secret, and split the rest over more Secrets"
    )]
    TooManyRegions { count: usize },
    #[error(
        "{REGISTRIES_ANNOTATION} entry {entry} is empty: separate entries with single commas, e.g. 123456789012/us-west-2,210987654321/eu-central-1"
    )]
    EmptyEntry { entry: usize },
    #[error(
        "{REGISTRIES_ANNOTATION} {value}: must be <account>/<region>, e.g. {REGISTRIES_EXAMPLE}"
    )]
    NotAccountRegion { value: String },
    #[error(
        "{REGISTRIES_ANNOTATION} {value}: account id must be 12 digits, e.g. 123456789012/{region}"
    )]
    BadAccount { value: String, region: String },
    /// Digits, but fewer than 12: often an account id that lost its leading zeros.
    #[error(
        "{REGISTRIES_ANNOTATION} {value}: account id {account} has {digits} digits; AWS account ids have 12, leading zeros included: if it lost them, write {padded}/{region}"
    )]
    ShortAccount {
        value: String,
        account: String,
        digits: usize,
        padded: String,
        region: String,
    },
    #[error(
        "{REGISTRIES_ANNOTATION}{at}: region {region} must be lowercase, e.g. {account}/{lower}"
    )]
    UppercaseRegion {
        at: String,
        account: String,
        region: String,
        lower: String,
    },
    #[error("{REGISTRIES_ANNOTATION}{at}: {region} is not an AWS region, e.g. {account}/us-west-2")]
    NotARegion {
        at: String,
        account: String,
        region: String,
    },
    #[error(
        "{REGISTRIES_ANNOTATION}{at}: {region} is not an AWS region this kubeecr knows, e.g. {account}/us-west-2; if AWS opened it after this release, its operator can add it with --extra-regions"
    )]
    UnknownRegion {
        at: String,
        account: String,
        region: String,
    },
    #[error("{REGISTRIES_ANNOTATION}: lists {entry} more than once; list each registry once")]
    Duplicate { entry: String },
    #[error(
        "{HOSTS_ANNOTATION}: {form} is not a host form; list standard, fips, dual-stack or dual-stack-fips, comma-separated, e.g. standard,fips"
    )]
    BadHostForm { form: String },
    #[error("{HOSTS_ANNOTATION}: lists {form} more than once; list each form once")]
    DuplicateHostForm { form: HostForm },
    #[error(
        "{HOSTS_ANNOTATION}: ECR has no {form} host for {registry}; {form} hosts exist in {regions}; remove {form}, or name a registry there"
    )]
    HostFormUnavailable {
        form: HostForm,
        registry: String,
        regions: String,
    },
    #[error(
        "{HOSTS_ANNOTATION}: {registries} registries in {forms} host forms make {count} hosts; write at most {MAX_REGISTRIES} hosts per Secret, and split the rest over more Secrets"
    )]
    TooManyHosts {
        registries: usize,
        forms: usize,
        count: usize,
    },
    #[error(
        "{ROLE_ANNOTATION} {value}: not an IAM role ARN; use arn:<partition>:iam::<12-digit account>:role/<name>, e.g. {ROLE_EXAMPLE}"
    )]
    BadRoleArn { value: String },
    #[error(
        "{ROLE_ANNOTATION} {value}: role is in partition {role_partition} but registry {registry} is in {registry_partition}; use a role of partition {registry_partition}"
    )]
    RolePartitionMismatch {
        value: String,
        role_partition: Partition,
        registry: String,
        registry_partition: Partition,
    },
    #[error(
        "{ROLE_ANNOTATION} {value}: not allowed in this namespace; name a role that --allowed-role-arns allows here ({allowed}), or ask kubeecr's operator"
    )]
    RoleNotAllowed {
        value: String,
        namespace: String,
        allowed: String,
    },
    #[error(
        "{REGISTRIES_ANNOTATION}: {registry} needs a role, since kubeecr's own AWS identity does not serve this namespace (--own-identity-namespaces); name one in {ROLE_ANNOTATION} that --allowed-role-arns allows here ({roles})"
    )]
    OwnIdentityNotAllowed {
        namespace: String,
        registry: String,
        allowed: String,
        roles: String,
    },
    #[error(
        "{REGISTRIES_ANNOTATION}: registry {registry} is not allowed in this namespace; use one that --allowed-registries allows here ({allowed}), or ask kubeecr's operator"
    )]
    RegistryNotAllowed {
        registry: String,
        namespace: String,
        allowed: String,
    },
    #[error(
        "this namespace is not served by this kubeecr installation ({why}); remove the {REGISTRIES_ANNOTATION} annotation, or ask its operator to serve it"
    )]
    NamespaceNotServed { namespace: String, why: String },
    #[error(
        "type is {found}, but kubeecr only fills secrets of type {DOCKER_CONFIG_JSON_TYPE} or {BASIC_AUTH_TYPE}, and Opaque ones labelled {ARGOCD_LABEL}: repository or repo-creds; create the secret with one of those (type cannot be changed in place) or remove the {REGISTRIES_ANNOTATION} annotation"
    )]
    WrongType { found: String },
    #[error(
        "{shape} holds one username and password, but {REGISTRIES_ANNOTATION} and {HOSTS_ANNOTATION} name {count} hosts; name one registry in one host form, or use a {DOCKER_CONFIG_JSON_TYPE} Secret for several"
    )]
    OneHostOnly { shape: Shape, count: usize },
    #[error(
        "Argo CD url {url} does not name {host}, the registry of {REGISTRIES_ANNOTATION}; set url to the repository under it, e.g. {host}/charts (a repo-creds url needs the path), or annotate the url's own registry"
    )]
    ArgoUrl { url: String, host: String },
}

impl ContractError {
    pub fn new(secret: &SecretRef, problem: Problem) -> Self {
        Self {
            secret: secret.clone(),
            problem: Box::new(problem),
        }
    }
}
