//! kubeecr keeps AWS ECR pull credentials fresh inside Kubernetes `dockerconfigjson` Secrets
//! that opt in with the `deft.com/kubeecr` annotation, updating them in place.
//!
//! Pure decisions (`annotation`, `policy`, `dockerconfig`, `token`, `secret_update`,
//! `admission`) are kept apart from I/O (`ecr`, `refresh`, `kube_client`, `webhook`,
//! `https_server`, `tls`).

pub mod admission;
pub mod annotation;
pub mod cli;
pub mod commands;
pub mod dockerconfig;
pub mod ecr;
pub mod https_server;
pub mod kube_client;
pub mod partition;
pub mod policy;
pub mod refresh;
pub mod secret_update;
pub mod serve;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod token_cache;
pub mod webhook;
