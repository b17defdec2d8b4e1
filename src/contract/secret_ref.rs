//! How kubeecr names a Secret: `namespace/name`, in logs whole, in messages to a person
//! escaped and cut.

use std::fmt;

/// `namespace/name` of a Secret, the way errors and logs name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
}

impl SecretRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// As messages to a person name it: escaped (a name the API server has not validated yet
    /// can hold anything), and cut to `MAX_NAME_SHOWN` characters, so that a 253-character name
    /// leaves room for what is wrong.
    pub fn short(&self) -> String {
        format!(
            "{}/{}",
            crate::contract::quote::escaped(&self.namespace, MAX_NAME_SHOWN),
            crate::contract::quote::escaped(&self.name, MAX_NAME_SHOWN)
        )
    }
}

/// Characters of a Secret's namespace or name shown in a message.
const MAX_NAME_SHOWN: usize = 64;

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
