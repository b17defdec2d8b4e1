//! kubeecr keeps AWS ECR pull credentials fresh inside Kubernetes `dockerconfigjson` Secrets
//! that opt in with the `deft.com/kubeecr` annotation, updating them in place.
//!
//! Pure decisions live in `contract` (what a Secret asks for and what kubeecr writes),
//! `contract::token` and `admission::decision`; everything else does I/O:
//!
//! - `tokens`: ECR tokens, cached per (principal, region);
//! - `admission`: the webhook's decisions and its HTTP routes;
//! - `refresher`: finds opted-in Secrets (one pass, or watches and a schedule) and patches them;
//! - `servers`: HTTPS with certificate reload, and the plain-HTTP admin port;
//! - `service`: `kubeecr serve` composed of those, leader election and shutdown;
//! - `status`: `kubeecr status`, where each opted-in Secret stands;
//! - `certs`: `kubeecr certs`, webhook certificates for clusters without cert-manager;
//! - `telemetry`: logs, metrics and Kubernetes Events;
//! - `cmd`: the command line, a module per subcommand, which turns flags into the settings
//!   above and runs it.

pub mod admission;
pub mod certs;
pub mod cmd;
pub mod contract;
pub mod k8s;
pub mod refresher;
pub mod servers;
pub mod service;
pub mod status;
pub mod telemetry;
pub mod tokens;
