//! The resources the double serves. Secrets are kubeecr's; Leases and Events are here for
//! leader election and Events on Secrets, which share the same store and rules.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKind {
    pub group: &'static str,
    pub version: &'static str,
    pub resource: &'static str,
    pub kind: &'static str,
    pub singular: &'static str,
}

pub const SECRETS: ResourceKind = ResourceKind {
    group: "",
    version: "v1",
    resource: "secrets",
    kind: "Secret",
    singular: "secret",
};

pub const CORE_EVENTS: ResourceKind = ResourceKind {
    group: "",
    version: "v1",
    resource: "events",
    kind: "Event",
    singular: "event",
};

pub const LEASES: ResourceKind = ResourceKind {
    group: "coordination.k8s.io",
    version: "v1",
    resource: "leases",
    kind: "Lease",
    singular: "lease",
};

pub const EVENTS: ResourceKind = ResourceKind {
    group: "events.k8s.io",
    version: "v1",
    resource: "events",
    kind: "Event",
    singular: "event",
};

pub const ALL: &[ResourceKind] = &[SECRETS, CORE_EVENTS, LEASES, EVENTS];

impl ResourceKind {
    pub fn find(group: &str, version: &str, resource: &str) -> Option<ResourceKind> {
        ALL.iter()
            .copied()
            .find(|k| k.group == group && k.version == version && k.resource == resource)
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn is_secret(&self) -> bool {
        *self == SECRETS
    }
}
