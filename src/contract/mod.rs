//! The contract between a Secret and kubeecr, as pure functions: how a Secret opts in, the
//! operator's policy, where a Secret stands and what the refresher does with it, what an ECR
//! token is, what kubeecr writes into `.dockerconfigjson`, and when a Secret is due.

pub mod annotation;
pub mod dockerconfig;
pub mod hosts;
pub mod json_spans;
pub mod kept;
pub mod marks;
pub mod partition;
pub mod plan;
pub mod policy;
pub mod problem;
pub mod quote;
pub mod secret_ref;
pub mod secret_update;
pub mod shape;
pub mod standing;
pub mod token;
