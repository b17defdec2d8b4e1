//! kubeecr keeps AWS ECR pull credentials fresh inside Kubernetes `dockerconfigjson` Secrets
//! that opt in with the `deft.com/kubeecr` annotation, updating them in place.
//!
//! Pure decisions (`annotation`, `policy`, `dockerconfig`, `token`, `secret_update`) are kept
//! apart from I/O (`ecr`, `refresh`, `kube_client`).

pub mod annotation;
pub mod cli;
pub mod commands;
pub mod dockerconfig;
pub mod ecr;
pub mod kube_client;
pub mod partition;
pub mod policy;
pub mod refresh;
pub mod secret_update;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod token_cache;
